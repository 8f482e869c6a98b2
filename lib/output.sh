#!/usr/bin/env bash
# Heroku-style build output, sourced by bin/compile.

# Usage: output::step "Installing queue-metrics"
output::step() {
	echo "-----> $*"
}

# Usage: output::info "detail"   (indented 7 spaces under the step)
output::info() {
	echo "       $*"
}

# Usage: output::warning "text"   (to stderr, Heroku's warning style)
output::warning() {
	echo " !     $*" >&2
}

# Usage: output::error "text"   (to stderr)
output::error() {
	echo " !     ERROR: $*" >&2
}

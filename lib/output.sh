#!/usr/bin/env bash
# Heroku-style build output, sourced by bin/compile, bin/test-compile and bin/build.

# Usage: output::step "Installing queue-metrics"
output::step() {
	echo "-----> $*"
}

# Usage: output::info "detail"   (indented 7 spaces under the step)
output::info() {
	echo "       $*"
}

# Usage: output::warning "text"  or  output::warning <<-EOF ... EOF   (to stderr, Heroku's style;
# a multi-line warning is set off by blank lines)
output::warning() {
	local line
	if (($#)); then
		echo " !     $*" >&2
		return 0
	fi
	echo >&2
	while IFS= read -r line; do
		echo " !     ${line}" >&2
	done
	echo >&2
}

# Usage: output::python_step ARGS...
# Runs `python3 -m buildpack ARGS...` from this buildpack with the build's python3, isolated from
# the app's PYTHON* variables, and shows its `info:` / `warning:` lines in Heroku's style. Returns
# non-zero when it failed, with the reason (its `error:` line) in OUTPUT_FAILURE.
output::python_step() {
	local lib line status=0
	lib="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
	OUTPUT_FAILURE=""
	# Streamed line by line (a bundle takes seconds); the exit status comes as a last `status:` line.
	# shellcheck disable=SC2312
	while IFS= read -r line; do
		case "${line}" in
			"") ;;
			info:*) output::info "${line#info:}" ;;
			warning:*) output::warning "${line#warning:}" ;;
			error:*) OUTPUT_FAILURE=${line#error:} ;;
			status:*) status=${line#status:} ;;
			*) output::info "${line}" ;;
		esac
	done < <(
		# A subshell: the caller's ERR trap and errexit must not act here, or no status would follow.
		trap - ERR
		set +e
		python3 -I -S -c 'import sys; sys.path.insert(0, sys.argv.pop(1)); from buildpack.__main__ import main; sys.exit(main(sys.argv[1:]))' \
			"${lib}" "$@" 2>&1
		echo "status:$?"
	)
	if ((status != 0)) && [[ -z ${OUTPUT_FAILURE} ]]; then
		OUTPUT_FAILURE="python3 -m buildpack $1 stopped with exit status ${status}"
	fi
	return "${status}"
}

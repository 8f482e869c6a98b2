# shellcheck shell=bash
# Sourced (not run) by bash at every dyno start, from $HOME/.profile.d/, installed by the
# queue-metrics buildpack. On every dyno it puts the `queue-metrics` command on PATH (for
# `heroku run queue-metrics once`), silently. On one dyno only (QUEUE_METRICS_DYNO, default web.1)
# it starts the collector's supervisor in the background; on every other dyno it starts nothing
# and prints nothing.
#
# Because it is sourced: no `exit`, no `set -e`, no variables or functions left behind.

if [[ ":${PATH}:" != *":${HOME}/.queue-metrics/bin:"* ]]; then
	export PATH="${PATH}:${HOME}/.queue-metrics/bin"
fi
if [[ "${DYNO:-}" != "${QUEUE_METRICS_DYNO:-web.1}" ]]; then
	return 0
fi
case "${QUEUE_METRICS_DISABLED:-}" in
	1 | [Tt][Rr][Uu][Ee] | [Yy][Ee][Ss] | [Oo][Nn]) return 0 ;;
	*) ;;
esac
# Which datastores to read (and whether there is any) is the collector's decision: with none, it
# says so in one line and the supervisor stops.
if [[ -x "${HOME}/.queue-metrics/libexec/queue-metrics-supervisor" ]]; then
	# The subshell exits at once: the supervisor is nobody's child but init's, and the dyno's
	# stdin is never read.
	("${HOME}/.queue-metrics/libexec/queue-metrics-supervisor" </dev/null &)
fi

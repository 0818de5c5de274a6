#!/bin/sh
# GET / (busybox httpd runs cgi-bin/index.cgi for a directory URL without index.html):
# the commit and feature flags this preview was deployed with, from the environment.
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
printf 'sha=%s\n' "${GIT_SHA:-unknown}"
env | grep '^FLAG_' | sort
exit 0

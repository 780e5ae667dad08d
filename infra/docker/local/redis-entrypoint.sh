#!/bin/sh
# As the official image's entrypoint: flags alone (or a config file) run redis-server, and a
# redis-server started without a config file answers clients from other containers (Debian's
# build refuses them in protected mode). A command that sets --protected-mode keeps its choice.
set -e
case "${1:-}" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ]; then
  case "${2:-}" in
    *.conf) ;;
    *) case " $* " in *" --protected-mode "*) ;; *) set -- "$@" --protected-mode no ;; esac ;;
  esac
fi
exec "$@"

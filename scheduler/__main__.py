import sys

from scheduler import stopflag

if stopflag.is_daemon_command(sys.argv[1:]):
    stopflag.install()  # before the slow imports: an early SIGTERM stops it cleanly

from scheduler.cli import main

main()

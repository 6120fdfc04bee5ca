"""The trio shell: sockets, tasks and timers around the no-I/O core."""

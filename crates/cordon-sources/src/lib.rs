//! Sources as running tasks: files followed, sockets listened on.

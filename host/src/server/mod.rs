//! Workers (a thread per core), listeners and HTTP/1.1 + HTTP/2 serving.

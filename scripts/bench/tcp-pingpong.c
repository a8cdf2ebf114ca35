// The floor under any request/response protocol on this host: one small message
// echoed over loopback TCP, one at a time, by the least code that can do it (blocking
// in epoll_wait as an event loop does, TCP_NODELAY, no framing, no allocation).
// scripts/bench/amp-vs-twisted runs it beside the AMP implementations, in the same
// placements, so that a sequential ratio can be read against what the host allows.
//
//   tcp-pingpong server PORT           echoes on 127.0.0.1:PORT (one connection)
//   tcp-pingpong client PORT SECONDS   prints "round_trips_per_second=N"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void fail(const char *what) {
    perror(what);
    exit(1);
}

// Blocks until fd is readable, as an idle event loop does.
static void wait_readable(int epoll) {
    struct epoll_event event;
    while (epoll_wait(epoll, &event, 1, -1) < 1) {}
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
        fprintf(stderr, "usage: tcp-pingpong server PORT | client PORT SECONDS\n");
        return 2;
    }
    int is_server = !strcmp(argv[1], "server");
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1, fd;
    if (is_server) {
        int listener = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 1)) fail("listen");
        printf("listening\n");
        fflush(stdout);
        if ((fd = accept(listener, NULL, NULL)) < 0) fail("accept");
    } else {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&address, sizeof address)) fail("connect");
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int epoll = epoll_create1(0);
    struct epoll_event interest = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &interest);

    // About the size of a BenchEcho box (128-byte payload, two keys, the reserved keys).
    char message[200], reply[4096];
    memset(message, 'a', sizeof message);
    if (is_server) {
        for (;;) {
            wait_readable(epoll);
            ssize_t n = read(fd, reply, sizeof reply);
            if (n <= 0) return 0;
            if (write(fd, reply, n) != n) fail("write");
        }
    }
    double seconds = atof(argv[3]), start = now();
    long round_trips = 0;
    while (now() - start < seconds) {
        if (write(fd, message, sizeof message) != sizeof message) fail("write");
        size_t received = 0;
        while (received < sizeof message) {
            wait_readable(epoll);
            ssize_t n = read(fd, reply, sizeof reply);
            if (n <= 0) fail("read");
            received += n;
        }
        round_trips++;
    }
    printf("round_trips_per_second=%ld\n", (long)(round_trips / (now() - start)));
    return 0;
}

/* A UDP echo service for the test guest, which busybox lacks (its nc is TCP only):
 * every datagram to PORT goes back to its sender unchanged.  Built static by
 * integration/guest/programs.py, so it runs in the busybox initramfs. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (s < 0 || bind(s, (struct sockaddr *)&address, sizeof address)) return 1;
    static char buffer[65536];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t size = sizeof peer;
        ssize_t n = recvfrom(s, buffer, sizeof buffer, 0, (struct sockaddr *)&peer, &size);
        if (n >= 0) sendto(s, buffer, n, 0, (struct sockaddr *)&peer, size);
    }
}

/* One system call with the given arguments; prints "ret=N" or "errno=N NAME".
   probe [-32] NR [ARG...]: -32 makes it through int 0x80 (the i386 entry, seen by seccomp as
   AUDIT_ARCH_I386). ARG: a number (strtoull, base 0: 0x.. ok), s:TEXT (pointer to a string),
   b:N (pointer to N zeroed bytes), w:A,B,.. (pointer to 32-bit words), q:A,B,.. (pointer to
   64-bit words). Buffers lie below 4 GiB (MAP_32BIT) so that i386 calls can use them.
   probe caps: prints the Cap* and Seccomp lines of /proc/self/status. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static char *low(size_t n) {
    char *p = mmap(NULL, n + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    return p;
}

static unsigned long arg(const char *a) {
    if (!strncmp(a, "s:", 2)) { char *p = low(strlen(a)); strcpy(p, a + 2); return (unsigned long)p; }
    if (!strncmp(a, "b:", 2)) return (unsigned long)low(strtoull(a + 2, NULL, 0));
    if (!strncmp(a, "w:", 2) || !strncmp(a, "q:", 2)) {
        int wide = a[0] == 'q';
        char *p = low(64 * 8), *s = (char *)a + 2;
        for (int i = 0; *s && i < 64; i++) {
            unsigned long long v = strtoull(s, &s, 0);
            if (wide) ((uint64_t *)p)[i] = v; else ((uint32_t *)p)[i] = (uint32_t)v;
            if (*s == ',') s++;
        }
        return (unsigned long)p;
    }
    return strtoull(a, NULL, 0);
}

static long int80(long nr, long a, long b, long c, long d, long e) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                     : "memory", "r8", "r9", "r10", "r11");
    return ret;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "caps")) {
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "Cap", 3) || !strncmp(line, "Seccomp", 7) || !strncmp(line, "NoNewPrivs", 10))
                fputs(line, stdout);
        return 0;
    }
    int i386 = argc > 1 && !strcmp(argv[1], "-32");
    if (i386) { argv++; argc--; }
    if (argc < 2) { fprintf(stderr, "usage: probe [-32] NR [ARG...]\n"); return 2; }
    unsigned long a[6] = {0};
    for (int i = 0; i < 6 && i + 2 < argc; i++) a[i] = arg(argv[i + 2]);
    long nr = strtol(argv[1], NULL, 0);
    pid_t me = getpid();
    long r;
    int err = 0;
    if (i386) {
        r = int80(nr, a[0], a[1], a[2], a[3], a[4]);
        if (r < 0 && r > -4096) { err = -r; r = -1; }
    } else {
        r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        if (r == -1) err = errno;
    }
    if (r == 0 && getpid() != me) _exit(0); /* the child of a clone that went through */
    if (err) printf("errno=%d %s\n", err, strerrorname_np(err) ? strerrorname_np(err) : "?");
    else printf("ret=%ld\n", r);
    return 0;
}

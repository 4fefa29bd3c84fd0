/*
 * LD_PRELOAD shim for the "lose un-fsynced writes" nemesis.
 *
 * It wraps fsync(2) and fdatasync(2): before the real call it takes the file's
 * size, and once the call succeeded it appends "<size> <path>\n" to the file
 * named by $JEPSEN_SYNC_LOG. Everything up to <size> of <path> is then on disk.
 * After kill -9 the harness truncates each write-ahead file to its last synced
 * size, which is what a machine losing power would have kept.
 *
 * One write(2) per line on an O_APPEND descriptor, so lines from concurrent
 * threads never interleave. (The variable is not CHORUS_*: log-nodes read
 * those as configuration and refuse unknown keys.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static off_t size_of(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
    return st.st_size;
}

static void record(int fd, off_t size) {
    const char *log = getenv("JEPSEN_SYNC_LOG");
    if (log == NULL || size < 0) return;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    char line[4200];
    int len = snprintf(line, sizeof line, "%lld %s\n", (long long)size, path);
    if (len <= 0 || len >= (int)sizeof line) return;
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) return;
    ssize_t w = write(out, line, (size_t)len);
    (void)w;
    close(out);
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    off_t size = size_of(fd);
    int r = real(fd);
    if (r == 0) record(fd, size);
    return r;
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    off_t size = size_of(fd);
    int r = real(fd);
    if (r == 0) record(fd, size);
    return r;
}

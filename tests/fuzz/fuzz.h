/* What every fuzz target defines, and a helper for parsers that read files. */
#ifndef EFPS_FUZZ_H
#define EFPS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* libFuzzer's entry points (replay.c calls them the same way). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A file in memory (memfd) holding exactly data[size], by a path the parser
 * can open: "/proc/self/fd/N". Slot 0..3: one memfd each, reused. */
static inline const char *fuzz_file(int slot, const void *data, size_t size)
{
    static int fd[4] = {-1, -1, -1, -1};
    static char path[4][64];
    if (fd[slot] < 0) {
        fd[slot] = memfd_create("efps-fuzz", MFD_CLOEXEC);
        if (fd[slot] < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path[slot], sizeof(path[slot]), "/proc/self/fd/%d", fd[slot]);
    }
    if (ftruncate(fd[slot], 0) != 0 ||
        (size > 0 && pwrite(fd[slot], data, size, 0) != (ssize_t)size)) {
        perror("memfd write");
        abort();
    }
    return path[slot];
}

#endif

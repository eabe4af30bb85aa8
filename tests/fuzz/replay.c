/* Replays inputs through a fuzz target without libFuzzer: replay DIR...
 * runs every regular file of each directory (a missing directory is empty)
 * through LLVMFuzzerTestOneInput, in name order. Fails when no input was
 * found at all: a corpus that vanished must not pass as a green test. A
 * crash, or a sanitizer report in the asan build, fails the test. */
#include "fuzz.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        if (f != NULL)
            fclose(f);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL || fread(buf, 1, size, f) != size) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    /* An exact-size copy, so ASan sees a read past the input's end. */
    LLVMFuzzerTestOneInput(buf, size);
    free(buf);
    return 0;
}

/* Runs the regular files of dir; returns how many, or -1. */
static int run_dir(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0)
        return 0;
    int ran = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (ran >= 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode) && names[i]->d_name[0] != '.')
            ran = run_file(path) == 0 ? ran + 1 : -1;
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    int total = 0;
    for (int i = 1; i < argc; i++) {
        int ran = run_dir(argv[i]);
        if (ran < 0)
            return 1;
        printf("replay: %d inputs from %s\n", ran, argv[i]);
        total += ran;
    }
    if (total == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    return 0;
}

/* tests/e2e/test_compile_once_artifact.py: call a compile-once artifact of the FFN block
 * (input x [batch, seq, HIDDEN] float32, output out of the same shape) from C through its
 * ember.h: main_arena_bytes(extents) sizes the arena, ember_run passes the extents.
 *   c_once_driver ARTIFACT BATCH SEQ HIDDEN x.bin out.bin */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

static void *aligned(size_t bytes) {
    size_t size = (bytes + EMBER_ALIGNMENT - 1) / EMBER_ALIGNMENT * EMBER_ALIGNMENT;
    void *buffer = aligned_alloc(EMBER_ALIGNMENT, size ? size : EMBER_ALIGNMENT);
    if (buffer == NULL) exit(2);
    memset(buffer, 0, size ? size : EMBER_ALIGNMENT);
    return buffer;
}

static void read_file(const char *path, void *into, size_t bytes) {
    FILE *file = fopen(path, "rb");
    if (file == NULL || fread(into, 1, bytes, file) != bytes) exit(2);
    fclose(file);
}

int main(int argc, char **argv) {
    if (argc != 7) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.so", argv[1]);
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) return 2;
    ember_entry_fn entry;
    ember_arena_bytes_fn arena_bytes;
    ember_set_num_threads_fn set_threads;
    *(void **)&entry = dlsym(library, EMBER_ENTRY_SYMBOL);
    *(void **)&arena_bytes = dlsym(library, EMBER_ARENA_BYTES_SYMBOL);
    *(void **)&set_threads = dlsym(library, EMBER_SET_NUM_THREADS_SYMBOL);
    if (entry == NULL || arena_bytes == NULL || set_threads == NULL) return 2;
    int64_t extents[EMBER_NUM_EXTENTS] = {atoll(argv[2]), atoll(argv[3])};
    size_t bytes = (size_t)(extents[0] * extents[1] * atoll(argv[4])) * sizeof(float);
    uint8_t *weights = aligned(EMBER_WEIGHTS_BYTES);
    snprintf(path, sizeof path, "%s/weights.bin", argv[1]);
    read_file(path, weights, EMBER_WEIGHTS_BYTES);
    void *x = aligned(bytes);
    void *out = aligned(bytes);
    read_file(argv[5], x, bytes);
    uint8_t *arena = aligned((size_t)arena_bytes(extents[0], extents[1]));
    int64_t status[EMBER_STATUS_WORDS] = {0};
    const void *inputs[] = {x};
    void *outputs[] = {out};
    set_threads(1);
    ember_run(entry, inputs, outputs, extents, arena, weights, status);
    if (status[EMBER_STATUS_CODE] != 0) return 3;
    FILE *file = fopen(argv[6], "wb");
    if (file == NULL || fwrite(out, 1, bytes, file) != bytes) return 2;
    fclose(file);
    return 0;
}

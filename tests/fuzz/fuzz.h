/* SPDX-License-Identifier: MIT */
/* The entry point every fuzz target defines: libFuzzer calls it (clang
 * -fsanitize=fuzzer), and replay.c calls it for each file of a corpus so
 * that the seed corpus runs as a plain test in every build. */
#ifndef QSNAP_FUZZ_H
#define QSNAP_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif

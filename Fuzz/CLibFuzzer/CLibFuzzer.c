// The declaration in include/CLibFuzzer.h is all this module is: libFuzzer itself is
// linked by -sanitize=fuzzer.

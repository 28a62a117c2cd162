/* The path of TinyStories-656K's Q8_0 GGUF under the shared folder ($PWB_SHARED, else
 * $PWB_ROOT/../shared), for the local backend's tests. */
#ifndef PWB_TEST_LLM_TINYSTORIES_H
#define PWB_TEST_LLM_TINYSTORIES_H

#include <stdio.h>
#include <stdlib.h>

static inline const char *ts_gguf(void)
{
    static char path[4096];
    const char *s = getenv("PWB_SHARED");
    const char *root = getenv("PWB_ROOT");
    const char *rel = "models/tinystories-656k/TinyStories-656K-Q8_0.gguf";
    if (s && *s)
        snprintf(path, sizeof path, "%s/%s", s, rel);
    else
        snprintf(path, sizeof path, "%s/../shared/%s", root && *root ? root : ".", rel);
    return path;
}

#endif

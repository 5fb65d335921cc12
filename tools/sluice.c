/*
 * sluice.c -- the command-line tool. Until the HTTP engine lands it only
 * reports its version and usage; it uses nothing but the public header.
 */
#include <sluice.h>

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "Usage: sluice [options] URL...\n"
                 "\n"
                 "Options:\n"
                 "  -h, --help     show this help and exit\n"
                 "  -V, --version  show version information and exit\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
            sl_loop_t loop;
            const char *backend = "unavailable";
            int rc = sl_loop_init(&loop);
            if (rc == 0)
                backend = sl_loop_backend(&loop);
            printf("sluice %s (libsluice %s; event backend %s)\n", SL_VERSION_STRING, sl_version(),
                   backend);
            if (rc == 0)
                sl_loop_close(&loop);
            return 0;
        }
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        fprintf(stderr, "sluice: option or URL '%s' is not supported yet (HTTP lands with issue 3)\n",
                argv[i]);
        return 2;
    }
    usage(stderr);
    return 2;
}

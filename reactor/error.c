/*
 * error.c -- sl_strerror() and sl_err_name(), generated from the single
 * error list in sluice.h so that a code, its name and its message can never
 * drift apart.
 */
#include "reactor-int.h"

const char *sl_strerror(int err)
{
    switch (err) {
#define SL__XX(code, msg)                                                                          \
    case SL_##code:                                                                                \
        return msg;
        SL__OS_ERRNO_MAP(SL__XX)
        SL__OWN_ERRNO_MAP(SL__XX)
#undef SL__XX
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}

const char *sl_err_name(int err)
{
    switch (err) {
#define SL__XX(code, msg)                                                                          \
    case SL_##code:                                                                                \
        return #code;
        SL__OS_ERRNO_MAP(SL__XX)
        SL__OWN_ERRNO_MAP(SL__XX)
#undef SL__XX
    case 0:
        return "OK";
    default:
        return "UNKNOWN";
    }
}

const char *sl_version(void)
{
    return SL_VERSION_STRING;
}

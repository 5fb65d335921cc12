/*
 * test_error.c -- the error list: values, names and messages generated from
 * one X-macro list must agree and never collide.
 */
#include "../../../reactor/error.c"

#include <check.h>
#include <string.h>

struct code {
    int value;
    const char *name;
    const char *msg;
};

static const struct code all_codes[] = {
#define SL__XX(c, m) {SL_##c, #c, m},
    SL__OS_ERRNO_MAP(SL__XX) SL__OWN_ERRNO_MAP(SL__XX)
#undef SL__XX
};

START_TEST(error_os_codes_are_negative_errno)
{
    ck_assert_int_eq(SL_EAGAIN, -EAGAIN);
    ck_assert_int_eq(SL_ENOMEM, -ENOMEM);
    ck_assert_int_eq(SL_ECONNREFUSED, -ECONNREFUSED);
    ck_assert_int_eq(SL_ECANCELED, -ECANCELED);
    ck_assert_int_eq(sl_translate_errno(EPIPE), SL_EPIPE);
}
END_TEST

START_TEST(error_own_codes_in_reserved_range)
{
    ck_assert_int_le(SL_EOF, SL__ERR_BASE);
    ck_assert_int_le(SL_ETIMEDOUT_TOTAL, SL__ERR_BASE);
    ck_assert_int_gt(SL_ETIMEDOUT_TOTAL, SL__ERR_BASE - 1000);
    /* no errno on any platform is this large */
    ck_assert_int_gt(-SL__ERR_BASE, 4095);
}
END_TEST

START_TEST(error_every_code_unique_and_described)
{
    size_t n = sizeof(all_codes) / sizeof(all_codes[0]);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_lt(all_codes[i].value, 0);
        ck_assert_str_eq(sl_err_name(all_codes[i].value), all_codes[i].name);
        ck_assert_str_eq(sl_strerror(all_codes[i].value), all_codes[i].msg);
        for (size_t j = i + 1; j < n; j++)
            ck_assert_msg(all_codes[i].value != all_codes[j].value, "%s and %s share %d",
                          all_codes[i].name, all_codes[j].name, all_codes[i].value);
    }
}
END_TEST

START_TEST(error_unknown_and_zero)
{
    ck_assert_str_eq(sl_err_name(0), "OK");
    ck_assert_str_eq(sl_strerror(0), "success");
    ck_assert_str_eq(sl_err_name(12345), "UNKNOWN");
    ck_assert_str_eq(sl_strerror(-99999), "unknown error");
    ck_assert_str_eq(sl_strerror(SL_ETIMEDOUT_CONNECT), "connect timed out");
    ck_assert_str_eq(sl_err_name(SL_EOF), "EOF");
    ck_assert_str_eq(sl_version(), SL_VERSION_STRING);
}
END_TEST

static Suite *error_suite(void)
{
    Suite *s = suite_create("error");
    TCase *tc = tcase_create("codes");
    tcase_add_test(tc, error_os_codes_are_negative_errno);
    tcase_add_test(tc, error_own_codes_in_reserved_range);
    tcase_add_test(tc, error_every_code_unique_and_described);
    tcase_add_test(tc, error_unknown_and_zero);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(error_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

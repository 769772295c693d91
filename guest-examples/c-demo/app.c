// The demo app, in C: the same five routes as every guest-examples/*-demo.
//
// `GET /` greets, `GET /hello/NAME` answers {"hello": NAME}, `POST /echo`
// streams the request body back with its content type, `GET /env/NAME`
// shows an environment variable the app was granted, anything else is 404.
// The wasi:http calls are the bindings `wit-bindgen c` writes into build/;
// getenv is wasi-libc's, which the preview1 adapter turns into
// wasi:cli/environment.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

typedef wasi_http_types_own_outgoing_body_t body_t;

static const char TEXT[] = "text/plain; charset=utf-8";

// Sends the head and hands back the body to write.
static body_t start(wasi_http_types_own_response_outparam_t out, uint16_t status,
                    const uint8_t *type, size_t type_len) {
    wasi_http_types_tuple2_field_name_field_value_t header = {
        .f0 = {(uint8_t *)"content-type", strlen("content-type")},
        .f1 = {(uint8_t *)type, type_len},
    };
    wasi_http_types_list_tuple2_field_name_field_value_t list = {&header, 1};
    wasi_http_types_own_fields_t headers;
    wasi_http_types_header_error_t header_error;
    if (!wasi_http_types_static_fields_from_list(&list, &headers, &header_error)) abort();
    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_borrow_outgoing_response_t borrowed =
        wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_method_outgoing_response_set_status_code(borrowed, status);
    body_t body;
    if (!wasi_http_types_method_outgoing_response_body(borrowed, &body)) abort();
    wasi_http_types_result_own_outgoing_response_error_code_t result = {
        .is_err = false,
        .val = {.ok = response},
    };
    wasi_http_types_static_response_outparam_set(out, &result);
    return body;
}

static void finish(body_t body) {
    wasi_http_types_error_code_t error;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &error)) {
        wasi_http_types_error_code_free(&error);
    }
}

static void reply(wasi_http_types_own_response_outparam_t out, uint16_t status,
                  const char *type, const char *text, size_t len) {
    body_t body = start(out, status, (const uint8_t *)type, strlen(type));
    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                    &stream))
        abort();
    app_list_u8_t data = {(uint8_t *)text, len};
    wasi_io_streams_stream_error_t error;
    // A client that went away is not this app's error: the host logs it.
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(stream), &data, &error))
        wasi_io_streams_stream_error_free(&error);
    wasi_io_streams_output_stream_drop_own(stream);
    finish(body);
}

static void reply_text(wasi_http_types_own_response_outparam_t out, uint16_t status,
                       const char *text) {
    reply(out, status, TEXT, text, strlen(text));
}

// Copies the request body to the response as it arrives, never whole.
static void echo(wasi_http_types_own_incoming_request_t request,
                 wasi_http_types_own_response_outparam_t out) {
    wasi_http_types_borrow_incoming_request_t borrowed =
        wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_own_headers_t headers =
        wasi_http_types_method_incoming_request_headers(borrowed);
    wasi_http_types_field_name_t name = {(uint8_t *)"content-type", strlen("content-type")};
    wasi_http_types_list_field_value_t types;
    wasi_http_types_method_fields_get(wasi_http_types_borrow_fields(headers), &name, &types);
    wasi_http_types_fields_drop_own(headers);

    wasi_http_types_own_incoming_body_t incoming;
    if (!wasi_http_types_method_incoming_request_consume(borrowed, &incoming)) abort();
    wasi_http_types_own_input_stream_t input;
    if (!wasi_http_types_method_incoming_body_stream(
            wasi_http_types_borrow_incoming_body(incoming), &input))
        abort();

    static const char fallback[] = "application/octet-stream";
    body_t body = types.len > 0
                      ? start(out, 200, types.ptr[0].ptr, types.ptr[0].len)
                      : start(out, 200, (const uint8_t *)fallback, strlen(fallback));
    wasi_http_types_list_field_value_free(&types);
    wasi_http_types_own_output_stream_t output;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                    &output))
        abort();

    bool complete;
    for (;;) {
        uint64_t copied;
        wasi_io_streams_stream_error_t error;
        if (!wasi_io_streams_method_output_stream_blocking_splice(
                wasi_io_streams_borrow_output_stream(output),
                wasi_io_streams_borrow_input_stream(input), 64 * 1024, &copied, &error)) {
            complete = error.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED;
            wasi_io_streams_stream_error_free(&error);
            break;
        }
    }
    wasi_io_streams_stream_error_t flush_error;
    if (!wasi_io_streams_method_output_stream_blocking_flush(
            wasi_io_streams_borrow_output_stream(output), &flush_error))
        wasi_io_streams_stream_error_free(&flush_error);

    // Children before parents: the streams, then the bodies, then the request.
    wasi_io_streams_input_stream_drop_own(input);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(incoming));
    wasi_io_streams_output_stream_drop_own(output);
    if (complete) {
        finish(body);
    } else {
        // An unfinished body tells the client the echo was cut short.
        wasi_http_types_outgoing_body_drop_own(body);
    }
    wasi_http_types_incoming_request_drop_own(request);
}

static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Decodes %XX escapes into a new NUL-terminated string.
static char *percent_decode(const char *text, size_t len) {
    char *out = malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '%' && i + 2 < len && hex(text[i + 1]) >= 0 &&
            hex(text[i + 2]) >= 0) {
            out[n++] = (char)(hex(text[i + 1]) * 16 + hex(text[i + 2]));
            i += 2;
        } else {
            out[n++] = text[i];
        }
    }
    out[n] = '\0';
    return out;
}

static void hello(wasi_http_types_own_response_outparam_t out, const char *name) {
    // Every byte escaped at worst to \u00XX, plus the braces around it.
    char *json = malloc(strlen(name) * 6 + 32);
    size_t n = (size_t)sprintf(json, "{\"hello\": \"");
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
        if (*c == '"' || *c == '\\') {
            json[n++] = '\\';
            json[n++] = (char)*c;
        } else if (*c < 0x20) {
            n += (size_t)sprintf(json + n, "\\u%04x", *c);
        } else {
            json[n++] = (char)*c;
        }
    }
    n += (size_t)sprintf(json + n, "\"}\n");
    reply(out, 200, "application/json", json, n);
    free(json);
}

static bool starts_with(const char *text, size_t len, const char *prefix) {
    size_t plen = strlen(prefix);
    return len >= plen && memcmp(text, prefix, plen) == 0;
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t out) {
    wasi_http_types_borrow_incoming_request_t borrowed =
        wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(borrowed, &method);
    bool get = method.tag == WASI_HTTP_TYPES_METHOD_GET;
    bool post = method.tag == WASI_HTTP_TYPES_METHOD_POST;
    wasi_http_types_method_free(&method);

    app_string_t target = {0};
    wasi_http_types_method_incoming_request_path_with_query(borrowed, &target);
    const char *path = (const char *)target.ptr;
    size_t len = 0;
    while (len < target.len && path[len] != '?') len++;

    if (len == 5 && memcmp(path, "/echo", 5) == 0) {
        if (post) {
            app_string_free(&target);
            echo(request, out);
            return;
        }
        reply_text(out, 405, "use POST\n");
    } else if (get && len == 1 && path[0] == '/') {
        reply_text(out, 200, "Hello from C!\n");
    } else if (get && starts_with(path, len, "/hello/")) {
        char *name = percent_decode(path + 7, len - 7);
        hello(out, name);
        free(name);
    } else if (get && starts_with(path, len, "/env/")) {
        char *name = percent_decode(path + 5, len - 5);
        const char *value = getenv(name);
        free(name);
        if (value == NULL) {
            reply_text(out, 404, "no such variable granted\n");
        } else {
            size_t value_len = strlen(value);
            char *line = malloc(value_len + 2);
            memcpy(line, value, value_len);
            line[value_len] = '\n';
            reply(out, 200, TEXT, line, value_len + 1);
            free(line);
        }
    } else {
        reply_text(out, 404, "not found\n");
    }
    app_string_free(&target);
    wasi_http_types_incoming_request_drop_own(request);
}

#!/usr/bin/env python3
# SPDX-License-Identifier: BSL-1.0
"""Writes the seed corpora of the fuzz targets (their binary input formats are described at
the top of each fuzz_*.cpp). Run from anywhere; rewrites fuzz/corpus/."""
import pathlib

here = pathlib.Path(__file__).resolve().parent
SECRET = bytes(range(16))  # maps to "ABCDEFGHIJKLMNOP" in fuzz_token_response.cpp


def response(status, body, secrets=()):
    head = (status - 100).to_bytes(2, "big") + bytes([len(secrets)])
    return head + b"".join(secrets) + body


responses = {
    "camel": response(200, b'{"accessToken":"at-1","tokenType":"Bearer","expiresIn":3600,'
                            b'"refreshToken":"rt-2","scope":"api"}'),
    "snake": response(200, b'{"access_token":"at-1","token_type":"bearer","expires_in":"3600"}'),
    "no_expiry": response(200, b'{"accessToken":"at-1"}'),
    "expiry_negative": response(200, b'{"accessToken":"a","expiresIn":-5}'),
    "expiry_zero": response(200, b'{"accessToken":"a","expiresIn":0}'),
    "expiry_huge": response(200, b'{"accessToken":"a","expiresIn":1e300}'),
    "expiry_text": response(200, b'{"accessToken":"a","expiresIn":"soon"}'),
    "token_with_space": response(200, b'{"accessToken":"a b"}'),
    "null": response(200, b"null"),
    "array": response(200, b"[1,2]"),
    "number": response(200, b"42"),
    "truncated": response(200, b'{"accessToken":"a'),
    "invalid_grant_echo": response(
        400, b'{"error":"invalid_grant","error_description":"token ABCDEFGHIJKLMNOP revoked"}',
        [SECRET]),
    "invalid_client": response(401, b'{"error":"invalid_client"}'),
    "unknown_error": response(400, b'{"error":"mystery","error_description":"\\u0000\\n"}'),
    "html_500": response(500, b"<html><body>Internal Server Error</body></html>"),
    "empty_503": response(503, b""),
    "redirect": response(301, b""),
}
requests = {
    "https": b"\x00https://api.example/nxsys/oauth/token\x00refresh-0\x00client\x00secret",
    "loopback_http": b"\x00http://127.0.0.1:8080/nxsys/oauth/token\x00rt+/=&?% \xf0\x9f\x94\x91"
                     b"\x00id\x00s e c",
    "insecure_http": b"\x00http://api.example/t\x00a\x00b\x00c",
    "insecure_allowed": b"\x01http://api.example/t\x00a\x00b\x00c",
    "ipv6": b"\x00https://[::1]:443/t?q=1\x00\x00\x00",
    "userinfo": b"\x00https://user:pw@h/\x00~*\x00-._\x00%",
    "fragment": b"\x00https://h/#frag\x00\xff\xfe\x00=\x00&",
    "not_a_url": b"\x00nxsys\x00\x00\x00",
}
for name, data in responses.items():
    (here / "corpus" / "token_response" / name).write_bytes(data)
for name, data in requests.items():
    (here / "corpus" / "request" / name).write_bytes(data)

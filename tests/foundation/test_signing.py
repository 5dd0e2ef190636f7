"""The executor HMAC must match what the backend computes with JavaScript's JSON.stringify."""

import json
import math
import random
import shutil
import struct
import subprocess

import pytest

from lib.dsm.signing import canonical_json, sign, signature, verify

# Vector computed with Node.js (JSON.stringify of the key-sorted object, crypto.createHmac).
BODY = {
    "job": {
        "id": "7f1c",
        "status": "completed",
        "details": {
            "progress_percent": 100.0,
            "note": "Größe – 東京 ✓",
            "ratio": 0.5,
            "tiny": 1e-7,
            "big": 1e21,
            "neg": -3.0,
            "list": [1.0, 2.5, None, True, False, 'a"b\\c\n'],
        },
    },
    "b": 1,
    "a": {"z": 0, "é": 1, "Z": 2},
}
NODE_CANONICAL = (
    '{"a":{"Z":2,"z":0,"é":1},"b":1,"job":{"details":{"big":1e+21,"list":[1,2.5,null,true,false,'
    '"a\\"b\\\\c\\n"],"neg":-3,"note":"Größe – 東京 ✓","progress_percent":100,"ratio":0.5,"tiny":1e-7},'
    '"id":"7f1c","status":"completed"}}'
)
NODE_SIGNATURE = "fa4c3ebc0b0685a2b2fb9c70b77e32579fc2126663a2562bc91c667b3b620572"


def test_canonical_json_follows_javascript_rules():
    assert canonical_json(BODY) == NODE_CANONICAL
    # Python's defaults differ on exactly these points, which is why we do not use them.
    assert json.dumps(BODY, sort_keys=True, separators=(",", ":")) != NODE_CANONICAL


@pytest.mark.parametrize(
    "value,javascript",
    [
        (1e-5, "0.00001"),
        (1.5e-6, "0.0000015"),
        (1.23e-5, "0.0000123"),
        (1e-7, "1e-7"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789.125, "123456789.125"),
        (0.30000000000000004, "0.30000000000000004"),
        (-2.5e-5, "-0.000025"),
        (-0.0, "0"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ],
)
def test_numbers_are_written_as_javascript_writes_them(value, javascript):
    # Each right-hand side is what Node.js printed for JSON.stringify(value).
    assert canonical_json(value) == javascript


def test_signature_matches_node_vector():
    assert signature(BODY, "shh-secret", 1767225600) == NODE_SIGNATURE
    headers = sign(BODY, "shh-secret", 1767225600)
    assert headers == {"x-executor-signature": NODE_SIGNATURE, "x-executor-timestamp": "1767225600"}


def test_verify_window_and_tampering():
    ts = 1_767_225_600
    sig = signature(BODY, "shh-secret", ts)
    assert verify(BODY, "shh-secret", sig, str(ts), now=ts + 299)
    assert not verify(BODY, "shh-secret", sig, str(ts), now=ts + 301)  # too old
    assert verify(BODY, "shh-secret", sig, str(ts), now=ts - 29)
    assert not verify(BODY, "shh-secret", sig, str(ts), now=ts - 31)  # too far in the future
    assert not verify(BODY, "other-secret", sig, str(ts), now=ts)
    tampered = {**BODY, "b": 2}
    assert not verify(tampered, "shh-secret", sig, str(ts), now=ts)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_matches_node_on_more_values():
    rng = random.Random(7)
    floats = [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(500)]
    floats += [rng.uniform(-1e-3, 1e-3) for _ in range(500)] + [rng.uniform(-1e25, 1e25) for _ in range(500)]
    floats = [f for f in floats if math.isfinite(f)]
    values = [
        {"x": 1.0e-8, "y": 123456789.125, "k": [{"b": 1, "a": 2}], "s": "\u2028\x01\t"},
        [0.1, -0.0, 5e-324],
        floats,
    ]
    for value in values:
        script = (
            "const s=v=>Array.isArray(v)?v.map(s):(v&&typeof v==='object')?"
            "Object.fromEntries(Object.keys(v).sort().map(k=>[k,s(v[k])])):v;"
            "process.stdout.write(JSON.stringify(s(JSON.parse(require('fs').readFileSync(0,'utf8')))))"
        )
        out = subprocess.run(
            ["node", "-e", script], input=json.dumps(value), capture_output=True, text=True, check=True
        )
        assert canonical_json(value) == out.stdout

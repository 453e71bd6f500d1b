"""Run inside the Salt venv: call Salt functions in-process through salt.client.Caller.

    build/salt-venv/bin/python tests/salt_caller.py MINION_CONFIG '[[fun, [args], {kwargs}], ...]'

Prints the list of return values as JSON. Used by tests/test_salt.py.
"""

import json
import sys

import salt.client
import salt.config

opts = salt.config.minion_config(sys.argv[1])
opts["file_client"] = "local"
caller = salt.client.Caller(mopts=opts)
out = [caller.cmd(fun, *args, **kwargs) for fun, args, kwargs in json.loads(sys.argv[2])]
print(json.dumps(out, default=str))

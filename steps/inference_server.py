"""`azmlinfsrv` (azureml-inference-server-http), bound to 127.0.0.1.

The package always binds 0.0.0.0 (its DEFAULT_HOST, not a flag), which would put
a local scoring server on every network the laptop is on. This runs the very same
server with the host constant set to loopback; every flag is azmlinfsrv's own.
"""

from __future__ import annotations

import sys

from azureml_inference_server_http import amlserver

amlserver.DEFAULT_HOST = "127.0.0.1"

if __name__ == "__main__":
    sys.argv[0] = "azmlinfsrv"
    sys.exit(amlserver.run())

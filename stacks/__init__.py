"""One CDK stack per file: storage, processing, gpu_workers, orchestration.

Resources pass between stacks as typed constructor arguments.
"""

import os

# jsii runs the CDK in Node; Node 20 prints an end-of-life banner on every start.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

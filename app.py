#!/usr/bin/env python3
"""CDK app: builds Mycelium's stacks (storage, processing, gpu_workers, orchestration).

The stacks land with the AWS deployment issue; until then this app synthesizes
nothing, so `cdk synth` is a no-op rather than a half-made deployment.
"""

import aws_cdk as cdk

app = cdk.App()
app.synth()

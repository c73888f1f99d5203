"""The data validation gate: a Great Expectations suite over the manifest, with Data Docs.

GX validates three batches: the manifest itself, image counts per (style, split), and each test
image's exact perceptual-hash match among the train images of its style (a train/test leak).

- `gate`: the stage, `validate_data`.
- `frames`: the tables GX validates besides the manifest (counts per style and split, leaks).
- `suites`: the three expectation suites, one GX expectation per check, each with the sentence
  that explains its failure.
- `gx_project`: the GX file project, its Data Docs site, running a suite's checkpoint.
- `report`: `CheckResult` and `ValidationReport`, the gate's result and its JSON.
"""

"""Every format and definition version, in one place. Bump one when what it names changes meaning.

A version that changes what a stage writes is part of that stage's config (``CaptureConfig.signals_version``),
so it changes the config hash and, through lineage, marks every downstream output stale.
"""

#: mycelium.analysis.signals: 2 = the row of CoT token t is the query that produced it (position p-1+t).
SIGNALS_VERSION = 2
#: mycelium.analysis and mycelium.mathlang: what one chunk's analysis writes (its AnalyzeConfig carries it, so a
#: new version makes every analysis stale). 2: LaTeX boxes and degrees are plain arithmetic; operand positions.
#: 3: "60%" is also 0.6; a written result that disagrees with the computed one grounds nothing.
#: 4: "50 cents" is also 0.5; ".25" (as in "$.25") is a number.
ANALYSIS_VERSION = 4
#: mycelium.records.chunk: the binary chunk layout. 2: quantised, reduced to what later stages read (v1 still read).
CHUNK_FORMAT_VERSION = 2
#: mycelium.cloud.manifest.RunManifest.
MANIFEST_VERSION = 1

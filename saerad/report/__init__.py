"""Report generation: SAE features -> grounded findings (schema, selection, composers, FHIR).

Kept free of torch-heavy imports so the service and the CLI can import the schema cheaply.
"""

from saerad.report.composer import Composition, compose
from saerad.report.schema import Box, FeatureRef, GroundedReport, ImageInfo, Sentence

__all__ = ["Box", "Composition", "FeatureRef", "GroundedReport", "ImageInfo", "Sentence", "compose"]

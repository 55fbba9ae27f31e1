"""Drawing shared by the findings and the report: primitives (`canvas`) and the findings' galleries
(`galleries`). Below both, so that neither reaches up into the other."""

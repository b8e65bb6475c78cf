"""The HTTP server: AUTOMATIC1111's ``/sdapi/v1`` API, OpenAI's images API and dreamloom's own
job API over one job queue. Routers parse and validate; the engine and the jobs do the work."""

"""The dui-gateway service: API, intake, pipeline, routing, delivery engine, audit, storage."""

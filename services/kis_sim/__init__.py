"""A local server that speaks Korea Investment & Securities' Open API on top of the paper world (``trader kis-sim``)."""

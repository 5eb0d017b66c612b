"""Gate decisions: pure logic on fixed numbers (``decisions``)."""

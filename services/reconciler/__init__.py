"""The reconciler process: broker account vs order journal vs agents' books, healed or halted."""

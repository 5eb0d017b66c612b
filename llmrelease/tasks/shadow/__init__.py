"""Shadow comparison: traffic logs (``traffic``), the replay through OpenAI-compatible servers
(``replay``), the statistics (``stats``) and the HTML report (``report``)."""

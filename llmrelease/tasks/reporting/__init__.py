"""What a person reads about a release: the HTML report and the version-page summary."""

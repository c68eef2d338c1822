"""The web side of yagi-meter: Atom feeds, the WebSub hub endpoint, auth."""

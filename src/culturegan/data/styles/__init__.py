"""One module per style of the embedded benchmark, each with the same interface:
`render(scene, size, rng) -> (size, size, 3) uint8`. `canvas` holds the helpers they share; the
registry of styles is `culturegan.data.synthetic.renderers()`.
"""

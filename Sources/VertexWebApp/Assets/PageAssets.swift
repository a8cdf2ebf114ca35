/// The page, its script and its style, embedded in the binary (no external assets).
enum PageAssets {}

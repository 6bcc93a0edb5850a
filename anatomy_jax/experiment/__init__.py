"""Study runners (config, grid, results) behind the experiment scripts."""

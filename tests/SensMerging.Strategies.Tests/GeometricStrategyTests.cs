using SensMerging.Strategies.ModelStock;
using SensMerging.Strategies.Slerp;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

public sealed class GeometricStrategyTests
{
    [Fact]
    public void Slerp_ends_are_base_and_model()
    {
        float[] b = [1, 2, 3];
        float[] x = [-1, 0.5f, 2];
        Assert.Equal(b, Run(new SlerpStrategy(), b, [x], global: new() { ["t"] = 0.0 }));
        Assert.Equal(x, Run(new SlerpStrategy(), b, [x], global: new() { ["t"] = 1.0 }));
    }

    [Fact]
    public void Slerp_half_between_orthogonal_vectors_is_on_the_arc()
    {
        var result = Run(new SlerpStrategy(), [1, 0], [[0, 1]], global: new() { ["t"] = 0.5 });
        var s = Math.Sin(Math.PI / 4); // theta = pi/2: s0 = s1 = sin(pi/4) / sin(pi/2)
        Close([s, s], result);

        float[] b = [3, 1, -2, 0.5f];
        float[] x = [1, 2, 1, -1];
        Close(Reference.Slerp(b, x, 0.3), Run(new SlerpStrategy(), b, [x], global: new() { ["t"] = 0.3 }, shape: [2, 2]));
    }

    [Fact]
    public void Slerp_colinear_falls_back_to_lerp_and_weight_scales_t()
    {
        Close([1.5, 3], Run(new SlerpStrategy(), [1, 2], [[2, 4]], global: new() { ["t"] = 0.5 }));
        float[] b = [1, 0];
        float[] x = [0, 1];
        Close(Reference.Slerp(b, x, 0.25), Run(new SlerpStrategy(), b, [x], [0.5], new() { ["t"] = 0.5 }));
        Assert.Equal(x, Run(new SlerpStrategy(), b, [x], [3.0], new() { ["t"] = 0.5 })); // clamped to 1
    }

    [Fact]
    public void Slerp_needs_exactly_one_model()
    {
        var error = Assert.Throws<ArgumentException>(() => Run(new SlerpStrategy(), [1f], [[1f], [2f]], global: new() { ["t"] = 0.5 }));
        Assert.Contains("at most 1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Model_stock_matches_hand_computation()
    {
        float[] b = [0, 0, 0];
        float[] x1 = [1, 1, 0];
        float[] x2 = [1, 0, 0];
        var cos = 1 / Math.Sqrt(2);
        var t = 2 * cos / (1 + cos);
        Close([t * 1, t * 0.5, 0], Run(new ModelStockStrategy(), b, [x1, x2]));

        // weights 3:1 -> average (1, 0.75, 0)
        Close([t, t * 0.75, 0], Run(new ModelStockStrategy(), b, [x1, x2], [3.0, 1.0]));
    }

    [Fact]
    public void Model_stock_with_three_models_matches_reference_and_orthogonal_gives_base()
    {
        var rng = new Random(8);
        var b = Random(rng, 120);
        float[][] xs = [Random(rng, 120, 1, 0.2), Random(rng, 120, 1, 0.3), Random(rng, 120, 1, 0.1)];
        Close(Reference.ModelStock(b, xs, [1.0, 0.5, 2.0]), Run(new ModelStockStrategy(), b, xs, [1.0, 0.5, 2.0], shape: [12, 10]), 1e-4);

        float[] zero = [1, 1];
        Close([1, 1], Run(new ModelStockStrategy(), zero, [[2, 1], [1, 2]])); // cos 0 -> t 0
        Close([1, 1], Run(new ModelStockStrategy(), zero, [[1, 1], [1, 1]])); // zero task vectors
    }

    [Fact]
    public void Model_stock_filter_wise_takes_one_t_per_row_streamed_or_whole()
    {
        // mergekit's filter_wise: cosines (and so t) per row along the last dimension; a 1-D tensor is one row.
        var rng = new Random(21);
        const int rows = 12, columns = 10;
        var b = Random(rng, rows * columns);
        float[][] xs = [Random(rng, rows * columns, 1, 0.2), Random(rng, rows * columns, 1, 0.3), Random(rng, rows * columns, 1, 0.1)];
        double[] weights = [1.0, 1.0, 1.0];
        var expected = new double[rows * columns];
        for (var r = 0; r < rows; r++)
        {
            var row = Reference.ModelStock(b[(r * columns)..((r + 1) * columns)], [.. xs.Select(x => x[(r * columns)..((r + 1) * columns)])], weights);
            row.CopyTo(expected, r * columns);
        }
        var global = new Dictionary<string, object> { ["filter_wise"] = true };
        var whole = Run(new ModelStockStrategy(), b, xs, weights, global, shape: [rows, columns]);
        Close(expected, whole, 1e-5);
        // Blocks of 7 elements cut rows anywhere: the per-row statistics must not depend on it.
        var streamed = Stream(new ModelStockStrategy(), b, xs, weights, global, null, 1, 7, out var passes, shape: [rows, columns]);
        Assert.Equal(1, passes);
        Close(expected, streamed, 1e-5);
        // Not filter-wise: one t for the whole tensor, which differs from the per-row result.
        var tensorWise = Run(new ModelStockStrategy(), b, xs, weights, shape: [rows, columns]);
        Close(Reference.ModelStock(b, xs, weights), tensorWise, 1e-5);
        Assert.True(expected.Zip(tensorWise).Max(p => Math.Abs(p.First - p.Second)) > 1e-3);
    }
}

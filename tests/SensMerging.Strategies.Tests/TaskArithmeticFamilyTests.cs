using SensMerging.Strategies.Common;
using SensMerging.Strategies.Linear;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

public sealed class TaskArithmeticFamilyTests
{
    [Fact]
    public void Linear_weights_not_summing_to_one_are_normalized_or_not()
    {
        float[] a = [1, 2, -3];
        float[] b = [5, -2, 1];
        var normalized = Run(new LinearStrategy(), null, [a, b], [0.5, 1.5]);
        Close([(0.5 * 1 + 1.5 * 5) / 2, (0.5 * 2 - 1.5 * 2) / 2, (-0.5 * 3 + 1.5) / 2], normalized);
        var raw = Run(new LinearStrategy(), null, [a, b], [0.5, 1.5], new() { ["normalize"] = false });
        Close([0.5 + 7.5, 1 - 3, -1.5 + 1.5], raw);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Task_arithmetic_matches_hand_computation_with_lambda_and_weights(bool torchPath)
    {
        float[] b = [1, 1, 1, 1];
        float[] x1 = [2, 0, 1, 3];   // delta  1, -1, 0, 2
        float[] x2 = [1, 3, -1, 1];  // delta  0,  2, -2, 0
        var result = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic), b, [x1, x2], [0.7, 0.6], new() { ["lambda"] = 0.5 }, shape: [2, 2], torchPath: torchPath);
        Close([1 + 0.5 * 0.7, 1 + 0.5 * (-0.7 + 1.2), 1 + 0.5 * -1.2, 1 + 0.5 * 1.4], result);

        var normalized = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic), b, [x1, x2], [0.7, 0.6], new() { ["normalize"] = true }, shape: [2, 2], torchPath: torchPath);
        Close([1 + 0.7 / 1.3, 1 + 0.5 / 1.3, 1 - 1.2 / 1.3, 1 + 1.4 / 1.3], normalized);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Zero_task_vector_leaves_the_base_for_every_variant(bool torchPath)
    {
        var rng = new Random(3);
        var b = Random(rng, 64);
        var strategies = new SensMerging.Abstractions.IMergeStrategy[]
        {
            new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic), new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear), new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies),
            new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs), new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.BreadcrumbsTies),
        };
        foreach (var strategy in strategies)
        {
            var global = new Dictionary<string, object> { ["normalize"] = true };
            var perModel = new Dictionary<string, object>[] { new() { ["density"] = 0.5 }, new() { ["density"] = 0.5 } };
            var withDensity = strategy.Parameters.Any(p => p.Name == "density");
            var result = Run(strategy, b, [(float[])b.Clone(), (float[])b.Clone()], [0.3, 0.9], global, withDensity ? perModel : null, seed: 11, shape: [8, 8], torchPath: torchPath);
            Close([.. b.Select(v => (double)v)], result);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ties_sign_conflict_keeps_only_the_elected_sign(bool torchPath)
    {
        float[] b = [0, 0, 0, 0];
        float[] x1 = [1, -2, 3, 0.5f];
        float[] x2 = [-3, 1, 1, 0.1f];
        // sums: -2, -1, 4, 0.6 -> elected -, -, +, +; disjoint mean of the agreeing entries
        var result = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), b, [x1, x2], shape: [2, 2], torchPath: torchPath);
        Close([-3, -2, 2, 0.3], result);

        var unnormalized = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), b, [x1, x2], global: new() { ["normalize"] = false }, shape: [2, 2], torchPath: torchPath);
        Close([-3, -2, 4, 0.6], unnormalized);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ties_with_density_and_unequal_weights_matches_reference(bool torchPath)
    {
        var rng = new Random(7);
        var b = Random(rng, 200);
        float[][] xs = [Random(rng, 200, 1, 0), Random(rng, 200, 2, 0.5), Random(rng, 200, 0.5, -0.2)];
        double[] weights = [0.4, 1.3, 0.8];
        double[] densities = [0.5, 0.3, 0.75];
        foreach (var normalize in new[] { true, false })
        {
            var result = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), b, xs, weights,
                new() { ["normalize"] = normalize, ["lambda"] = 0.9 },
                [.. densities.Select(d => new Dictionary<string, object> { ["density"] = d })], shape: [10, 20], torchPath: torchPath);
            var deltas = xs.Select((x, i) => Reference.TopMagnitude(Reference.Delta(x, b), densities[i])).ToArray();
            Close(Reference.Combine(b, deltas, weights, consensus: true, normalize, 0.9), result);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ties_negative_weight_votes_with_its_weighted_sign(bool torchPath)
    {
        float[] b = [0, 0, 0, 0];
        float[] x1 = [1, 1, 1, 1];
        float[] x2 = [2, -1, 2, -1];
        var result = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), b, [x1, x2], [1.0, -1.0], shape: [2, 2], torchPath: torchPath);
        // weighted deltas: (1, 1) and (-2, 1); sums -1, 2 -> elected -, +
        var expected = Reference.Combine(b, [Reference.Delta(x1, b), Reference.Delta(x2, b)], [1.0, -1.0], true, true, 1.0);
        Close(expected, result);
        // element 0: elected -, only -2 kept, divided by its weight -1; element 1: both kept, weights cancel -> divisor 1
        Close([2, 2, 2, 2], result);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Breadcrumbs_keeps_exactly_the_middle_band(bool torchPath)
    {
        // magnitudes 1..100 in shuffled order with alternating signs
        var rng = new Random(5);
        var magnitudes = Enumerable.Range(1, 100).OrderBy(_ => rng.Next()).ToArray();
        var b = new float[100];
        var x = magnitudes.Select((m, i) => (float)(i % 2 == 0 ? m : -m)).ToArray();
        var result = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs), b, [x], global: null,
            perModel: [new() { ["density"] = 0.8, ["gamma"] = 0.1 }], shape: [10, 10], torchPath: torchPath);
        for (var i = 0; i < 100; i++)
        {
            var kept = magnitudes[i] > 10 && magnitudes[i] <= 90; // drop the 10 smallest and the 10 largest
            Assert.Equal(kept ? x[i] : 0f, result[i]);
        }
        Assert.Equal(80, result.Count(v => v != 0));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Breadcrumbs_with_gamma_zero_and_breadcrumbs_ties_match_mergekit_reference(bool torchPath)
    {
        var rng = new Random(9);
        var b = Random(rng, 300);
        float[][] xs = [Random(rng, 300, 1.5), Random(rng, 300, 1, 0.3)];
        double[] weights = [1.2, 0.5];
        var perModel = new Dictionary<string, object>[] { new() { ["density"] = 0.6, ["gamma"] = 0.05 }, new() { ["density"] = 0.9, ["gamma"] = 0.0 } };
        var deltas = xs.Select((x, i) => Reference.Band(Reference.Delta(x, b), (double)perModel[i]["density"], (double)perModel[i]["gamma"])).ToArray();

        var linear = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs), b, xs, weights, new() { ["lambda"] = 1.5 }, perModel, shape: [15, 20], torchPath: torchPath);
        Close(Reference.Combine(b, deltas, weights, consensus: false, normalize: false, 1.5), linear);

        var ties = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.BreadcrumbsTies), b, xs, weights, new() { ["normalize"] = true }, perModel, shape: [15, 20], torchPath: torchPath);
        Close(Reference.Combine(b, deltas, weights, consensus: true, normalize: true, 1.0), ties);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Breadcrumbs_drops_the_task_vector_of_a_tensor_too_small_for_gamma_as_mergekit(bool torchPath)
    {
        // 60 elements at the default gamma 0.01: floor(0.6) = 0 outliers to remove, so mergekit's sorted[bottom:-0] is
        // empty and the whole task vector of the tensor is dropped; at gamma 0.05 (3 outliers) the band is kept.
        var rng = new Random(12);
        var b = Random(rng, 60);
        float[][] xs = [Random(rng, 60, 1.5)];
        var dropped = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs), b, xs, global: null,
            perModel: [new() { ["density"] = 0.7 }], shape: [6, 10], torchPath: torchPath);
        Assert.Equal(b, dropped);
        var band = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs), b, xs, global: null,
            perModel: [new() { ["density"] = 0.7, ["gamma"] = 0.05 }], shape: [6, 10], torchPath: torchPath);
        var expected = Reference.Band(Reference.Delta(xs[0], b), 0.7, 0.05);
        Assert.Equal(42, expected.Count(d => d != 0));
        Close([.. expected.Select((d, i) => b[i] + d)], band);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ties_and_breadcrumbs_with_rescale_keep_each_task_vectors_L1_norm(bool torchPath)
    {
        var rng = new Random(14);
        var b = Random(rng, 400);
        float[][] xs = [Random(rng, 400, 1.2), Random(rng, 400, 0.8, 0.2)];
        double[] weights = [0.7, 1.1];
        double[] densities = [0.3, 0.6];
        var perModel = densities.Select(d => new Dictionary<string, object> { ["density"] = d, ["gamma"] = 0.02 }).ToArray();
        var deltas = xs.Select(x => Reference.Delta(x, b)).ToArray();

        var ties = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), b, xs, weights, new() { ["rescale"] = true },
            [.. densities.Select(d => new Dictionary<string, object> { ["density"] = d })], shape: [20, 20], torchPath: torchPath);
        var tiesDeltas = deltas.Select((d, i) => Reference.RescaleL1(d, Reference.TopMagnitude(d, densities[i]))).ToArray();
        Close(Reference.Combine(b, tiesDeltas, weights, consensus: true, normalize: true, 1.0), ties, 1e-4);

        var crumbs = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs), b, xs, weights, new() { ["rescale"] = true, ["lambda"] = 0.5 },
            perModel, shape: [20, 20], torchPath: torchPath);
        var crumbDeltas = deltas.Select((d, i) => Reference.RescaleL1(d, Reference.Band(d, densities[i], 0.02))).ToArray();
        Close(Reference.Combine(b, crumbDeltas, weights, consensus: false, normalize: false, 0.5), crumbs, 1e-4);

        // Without rescale (the default for both), the same masks and no scaling.
        var plain = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), b, xs, weights, global: null,
            [.. densities.Select(d => new Dictionary<string, object> { ["density"] = d })], shape: [20, 20], torchPath: torchPath);
        Close(Reference.Combine(b, [.. deltas.Select((d, i) => Reference.TopMagnitude(d, densities[i]))], weights, consensus: true, normalize: true, 1.0), plain);
    }

    [Fact]
    public void Variants_declare_mergekit_defaults_and_traits()
    {
        var ties = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties);
        Assert.Equal(true, ties.Parameters.Single(p => p.Name == "normalize").Default);
        Assert.False(ties.Traits.Elementwise);
        Assert.Equal(0.0, ties.Parameters.Single(p => p.Name == "density").Minimum);
        Assert.Equal(1.0, ties.Parameters.Single(p => p.Name == "density").Maximum);
        var dare = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies);
        Assert.True(dare.Traits.UsesRandomness);
        Assert.False(dare.Traits.Elementwise); // the L1 rescale is a whole-tensor statistic
        Assert.Equal(true, dare.Parameters.Single(p => p.Name == "rescale").Default);
        Assert.Equal(false, ties.Parameters.Single(p => p.Name == "rescale").Default);
        Assert.Contains(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic).Parameters, p => p.Name == "rescale");
        Assert.Contains(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic).Parameters, p => p.Name == "density");
        Assert.Equal(TaskArithmeticVariant.All.Count, TaskArithmeticVariant.All.Select(v => v.Name).Distinct().Count());
        Assert.True(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic).Traits.Elementwise);
        Assert.Equal(false, new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic).Parameters.Single(p => p.Name == "normalize").Default);
        Assert.Equal(0.01, new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs).Parameters.Single(p => p.Name == "gamma").Default);
        Assert.False(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.BreadcrumbsTies).Traits.Elementwise);
    }

    [Fact]
    public void Missing_base_is_a_clear_error()
    {
        var error = Assert.Throws<ArgumentException>(() => Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), null, [[1f, 2f]]));
        Assert.Contains("base model", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Density_declares_its_range_for_the_host_to_check()
    {
        // Contract 1.3: the plugin declares density's range and the host alone checks it, before any tensor is read
        // (ConfigParameterTests.Out_of_range_density_is_refused_before_the_merge).
        foreach (var variant in TaskArithmeticVariant.All.Where(v => v.Sparsification != SparsificationMethod.None))
        {
            var density = GeneralizedTaskArithmeticStrategy.Create(variant).Parameters.Single(p => p.Name == "density");
            Assert.Equal((0.0, 1.0), (density.Minimum, density.Maximum));
        }
    }
}

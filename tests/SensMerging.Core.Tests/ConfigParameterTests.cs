using SensMerging.Abstractions;
using SensMerging.Core.Config;

namespace SensMerging.Core.Tests;

public sealed class ConfigParameterTests
{
    private static MergeConfig Parse(string yaml) => MergeConfigParser.Parse(yaml, "test.yaml", Path.GetTempPath());

    [Theory]
    [InlineData("model.layers.0.mlp.up_proj.weight", 5, 0.0)]
    [InlineData("model.layers.4.mlp.up_proj.weight", 5, 1.0)]
    [InlineData("model.layers.1.self_attn.k_proj.weight", 5, 0.25)]
    [InlineData("model.layers.0.mlp.up_proj.weight", 1, 1.0)]
    [InlineData("model.embed_tokens.weight", 5, 0.0)]
    [InlineData("model.norm.weight", 5, 0.0)]
    [InlineData("lm_head.weight", 5, 0.0)]
    public void Depth_follows_mergekit_positions(string tensor, int layers, double expected) =>
        Assert.Equal(expected, ParameterResolver.Depth(tensor, layers), 12);

    [Fact]
    public void Gradient_interpolates_linearly_by_block_index()
    {
        var config = Parse("merge_method: ties\nbase_model: o/b\nmodels:\n  - model: o/a\n    parameters:\n      density: [0.2, 0.6, 1.0]\n");
        var resolver = ParameterResolver.For(config, SpecOnlyStrategy.For("ties"));
        // 9 blocks: depth b/8, position 2*b/8 over the three values
        double[] expected = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
        for (var b = 0; b < 9; b++)
        {
            Assert.Equal(expected[b], resolver.Resolve($"model.layers.{b}.mlp.up_proj.weight", 9).Float("density", 0), 12);
        }
        // mergekit >= 0.1.2 (plan.py): the tensors before and after the blocks are planned at t = 0, the list's first value.
        Assert.Equal(0.2, resolver.Resolve("model.embed_tokens.weight", 9).Float("density", 0), 12);
        Assert.Equal(0.2, resolver.Resolve("model.norm.weight", 9).Float("density", 0), 12);
        Assert.Equal(0.2, resolver.Resolve("lm_head.weight", 9).Float("density", 0), 12);

        var gradient = new GradientParameter([0.0, 10.0], 1);
        Assert.Equal(2.5, (double)gradient.Evaluate("x", () => 0.25)!, 12);
        var picks = new GradientParameter(["a", "b", "c"], 1);
        Assert.Equal("b", picks.Evaluate("x", () => 0.9));
    }

    [Fact]
    public void Filters_first_substring_match_wins_and_unmatched_falls_back_to_global_then_default()
    {
        var config = Parse("""
            merge_method: ties
            base_model: o/b
            models:
              - model: o/a
                parameters:
                  density:
                    - filter: self_attn
                      value: 0.3
                    - filter: attn
                      value: 0.4
                    - filter: "*"
                      value: 0.9
              - model: o/c
                parameters:
                  density:
                    - filter: mlp
                      value: 0.2
            parameters:
              density:
                - filter: norm
                  value: 0.6
            """);
        var resolver = ParameterResolver.For(config, SpecOnlyStrategy.For("ties"));
        Assert.Equal(0.3, resolver.Resolve("model.layers.0.self_attn.q_proj.weight", 2).Float("density", 0));
        Assert.Equal(0.9, resolver.Resolve("model.layers.0.mlp.up_proj.weight", 2).Float("density", 0));
        Assert.Equal(0.2, resolver.Resolve("model.layers.0.mlp.up_proj.weight", 2).Float("density", 1));
        Assert.Equal(0.6, resolver.Resolve("model.layers.0.input_layernorm.weight", 2).Float("density", 1)); // model filter misses -> global
        Assert.Equal(1.0, resolver.Resolve("model.layers.0.self_attn.q_proj.weight", 2).Float("density", 1)); // both miss -> default
    }

    [Fact]
    public void Unknown_method_parameter_names_the_parameter_and_the_known_ones()
    {
        var config = Parse("merge_method: ties\nbase_model: o/b\nmodels:\n  - model: o/a\n    parameters:\n      epsilon: 0.1\nparameters:\n  filter_wise: true\n");
        var error = Assert.Throws<MergeConfigException>(() => ParameterResolver.For(config, SpecOnlyStrategy.For("ties")));
        Assert.Contains("line 6: 'epsilon' (model 'o/a') is not a parameter of merge method 'ties' (known: weight, density, lambda, normalize, rescale, int8_mask)", error.Message, StringComparison.Ordinal);
        Assert.Contains("line 8: 'filter_wise' is not a parameter of merge method 'ties'", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("task_arithmetic", "  rescale: true\n", "    density: 0.5\n")]
    [InlineData("ties", "  rescale: true\n", "    density: 0.5\n")]
    [InlineData("breadcrumbs", "  rescale: false\n", "    gamma: 0.02\n")]
    public void Parameters_mergekit_accepts_on_the_task_arithmetic_family_are_accepted(string method, string global, string perModel)
    {
        // mergekit declares rescale on every generalized-task-arithmetic method and density on all of them (task_arithmetic
        // ignores it): a config using them must not be refused.
        var config = Parse($"merge_method: {method}\nbase_model: o/b\nmodels:\n  - model: o/a\n    parameters:\n      weight: 1.0\n  {perModel}parameters:\n{global}");
        var resolver = ParameterResolver.For(config, SpecOnlyStrategy.For(method));
        Assert.NotNull(resolver.Resolve("model.layers.0.mlp.up_proj.weight", 2));
    }

    [Fact]
    public void Global_parameter_given_per_model_is_an_error()
    {
        var config = Parse("merge_method: ties\nbase_model: o/b\nmodels:\n  - model: o/a\n    parameters:\n      lambda: 0.5\n");
        var error = Assert.Throws<MergeConfigException>(() => ParameterResolver.For(config, SpecOnlyStrategy.For("ties")));
        Assert.Contains("'lambda'", error.Message, StringComparison.Ordinal);
        Assert.Contains("top-level 'parameters'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Out_of_range_names_parameter_model_value_and_range()
    {
        var config = Parse("merge_method: ties\nbase_model: o/b\nmodels:\n  - model: o/a\n    parameters:\n      density: 1.5\n");
        var strategy = SpecOnlyStrategy.For("ties");
        var error = Assert.Throws<MergeConfigException>(() =>
            ParameterResolver.Validate(config, strategy, ["model.layers.0.mlp.up_proj.weight"], 1));
        Assert.Contains("parameter 'density' of model 'o/a' is 1.5, outside the allowed range [0, 1]", error.Message, StringComparison.Ordinal);

        // a gradient that leaves the range only in the last blocks is caught by eager validation
        var gradient = Parse("merge_method: slerp\nbase_model: o/b\nmodels:\n  - model: o/a\nparameters:\n  t: [0.5, 1.5]\n");
        string[] tensors = [.. Enumerable.Range(0, 4).Select(b => $"model.layers.{b}.mlp.up_proj.weight")];
        var late = Assert.Throws<MergeConfigException>(() => ParameterResolver.Validate(gradient, SpecOnlyStrategy.For("slerp"), tensors, 4));
        Assert.Contains("parameter 't' of merge method 'slerp' is 1.1666", late.Message, StringComparison.Ordinal);
        Assert.Contains("model.layers.2.mlp.up_proj.weight", late.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Wrong_kinds_and_missing_required_values_are_errors()
    {
        var config = Parse("merge_method: ties\nbase_model: o/b\nmodels:\n  - model: o/a\nparameters:\n  normalize: 0.5\n  lambda: \"big\"\n");
        var error = Assert.Throws<MergeConfigException>(() =>
            ParameterResolver.For(config, SpecOnlyStrategy.For("ties")).Resolve("lm_head.weight", 1));
        Assert.Contains("must be", error.Message, StringComparison.Ordinal);

        var noT = Parse("merge_method: slerp\nbase_model: o/b\nmodels:\n  - model: o/a\n");
        var missing = Assert.Throws<MergeConfigException>(() => ParameterResolver.For(noT, SpecOnlyStrategy.For("slerp")).Resolve("lm_head.weight", 1));
        Assert.Contains("needs parameter 't'", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_checks_model_counts_base_and_method()
    {
        var twoExperts = Parse("merge_method: slerp\nbase_model: o/b\nmodels:\n  - model: o/a\n  - model: o/c\nparameters:\n  t: 0.5\n");
        var error = Assert.Throws<MergeConfigException>(() => ParameterResolver.Validate(twoExperts, SpecOnlyStrategy.For("slerp"), ["lm_head.weight"], 1));
        Assert.Contains("at most 1 model", error.Message, StringComparison.Ordinal);

        var noBase = Parse("merge_method: model_stock\nmodels:\n  - model: o/a\n");
        var both = Assert.Throws<MergeConfigException>(() => ParameterResolver.Validate(noBase, SpecOnlyStrategy.For("model_stock"), ["lm_head.weight"], 1));
        Assert.Contains("needs a base model (base_model)", both.Message, StringComparison.Ordinal);
        Assert.Contains("at least 2 model(s)", both.Message, StringComparison.Ordinal);

        var other = Assert.Throws<MergeConfigException>(() => ParameterResolver.Validate(noBase, SpecOnlyStrategy.For("linear"), ["lm_head.weight"], 1));
        Assert.Contains("merge_method is 'model_stock' but the strategy is 'linear'", other.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Out_of_range_density_is_refused_before_the_merge()
    {
        // The host's check is the only one (contract 1.3): the ties plugin reads density without checking it again.
        var config = Parse("merge_method: ties\nbase_model: o/b\nmodels:\n  - model: o/a\n    parameters:\n      density: 1.5\n");
        var error = Assert.Throws<MergeConfigException>(() =>
            ParameterResolver.Validate(config, SpecOnlyStrategy.For("ties"), ["model.layers.0.mlp.up_proj.weight"], 1));
        Assert.Contains("parameter 'density'", error.Message, StringComparison.Ordinal);
        Assert.Contains("outside the allowed range [0, 1]", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Component_parameters_resolve_with_defaults_ranges_and_lists()
    {
        ParameterSpec[] specs =
        [
            ParameterSpec.Float("temperature", 1.0, ParameterScope.Global, "softmax temperature", 0.01, 100),
            ParameterSpec.Choice("scorers", "sensitivity", ParameterScope.Global, "scorers"),
            ParameterSpec.Integer("samples", 100, ParameterScope.Global, "samples", 1),
        ];
        var resolved = ParameterResolver.ResolveComponent("decorator 'sens'",
            new Dictionary<string, object> { ["temperature"] = 2L, ["scorers"] = new List<object> { "a", "b" } }, specs);
        Assert.Equal(2.0, resolved.Float("temperature"));
        Assert.Equal("a,b", resolved.String("scorers"));
        Assert.Equal(100, resolved.Integer("samples"));

        var error = Assert.Throws<MergeConfigException>(() => ParameterResolver.ResolveComponent("decorator 'sens'",
            new Dictionary<string, object> { ["temperature"] = 0.0, ["bogus"] = 1L }, specs));
        Assert.Contains("'bogus' is not a parameter of decorator 'sens' (known: temperature, scorers, samples)", error.Message, StringComparison.Ordinal);
        Assert.Contains("outside the allowed range [0.01, 100]", error.Message, StringComparison.Ordinal);

        // The host's check is the only one a plugin gets (contract 1.3): a NaN or infinity passes no range test, so it is refused here.
        foreach (var bad in new[] { double.NaN, double.PositiveInfinity })
        {
            var notFinite = Assert.Throws<MergeConfigException>(() => ParameterResolver.ResolveComponent("decorator 'sens'",
                new Dictionary<string, object> { ["temperature"] = bad }, specs));
            Assert.Contains("not a finite number", notFinite.Message, StringComparison.Ordinal);
        }
    }

    private static readonly string[] DecoratorGroups = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.layers.2", "model.norm", "lm_head"];

    private static readonly ParameterSpec[] DecoratorSpecs =
    [
        ParameterSpec.Float("temperature", 2.0, ParameterScope.Global, "T", min: 0.01) with { PerLayerGroup = true },
        ParameterSpec.Boolean("task_scaling", true, ParameterScope.Global, "task scaling") with { PerLayerGroup = true },
        ParameterSpec.Choice("temperature_scale", "absolute", ParameterScope.Global, "scale", "absolute", "spread") with { PerLayerGroup = true },
        new ParameterSpec("task_scorer", ParameterKind.String, "sensitivity", ParameterScope.Global, "scorer"),
        ParameterSpec.Float("strength", 1.0, ParameterScope.Global, "one value for the merge"),
    ];

    private static IReadOnlyDictionary<string, ParameterValue> DecoratorValues(string yaml) =>
        Parse("merge_method: linear\nmodels:\n  - model: org/a\ndecorators:\n  - name: sens\n    parameters:\n" + yaml).Decorators[0].Parameters;

    [Fact]
    public void Decorator_parameters_vary_by_layer_group_with_gradients_and_filters()
    {
        // Three blocks: block b sits at depth b / 2; embeddings, final norm and head at depth 0 (mergekit's t = 0 for the
        // tensors outside the blocks), so a gradient gives them its first value.
        var values = DecoratorValues("""
                  temperature: [1.0, 3.0]
                  task_scaling:
                    - filter: lm_head
                      value: false
                    - value: true
                  temperature_scale:
                    - filter: model.layers.2
                      value: spread
                  task_scorer: fisher
            """);
        var resolved = DecoratorParameters.Resolve("decorator 'sens'", values, DecoratorSpecs, DecoratorGroups, 3);
        Assert.Equal(DecoratorGroups.Length, resolved.LayerGroups.Count);
        Assert.Equal([1.0, 1.0, 2.0, 3.0, 1.0, 1.0], resolved.LayerGroups.Select(p => p.Float("temperature")));
        Assert.Equal([true, true, true, true, true, false], resolved.LayerGroups.Select(p => p.Boolean("task_scaling")));
        // A filter list without a matching entry falls back to the declared default.
        Assert.Equal(["absolute", "absolute", "absolute", "spread", "absolute", "absolute"], resolved.LayerGroups.Select(p => p.String("temperature_scale")));
        // One-value parameters are the same in every group; the merge-wide value of a per-group one is its first group's.
        Assert.All(resolved.LayerGroups, p => Assert.Equal("fisher", p.String("task_scorer")));
        Assert.All(resolved.LayerGroups, p => Assert.Equal(1.0, p.Float("strength")));
        Assert.Equal(1.0, resolved.Merge.Float("temperature"));
        Assert.Equal("fisher", resolved.Merge.String("task_scorer"));

        // Plain values: every group the same.
        var plain = DecoratorParameters.Resolve("decorator 'sens'", DecoratorValues("      temperature: 0.5\n"), DecoratorSpecs, DecoratorGroups, 3);
        Assert.All(plain.LayerGroups, p => Assert.Equal(0.5, p.Float("temperature")));
        Assert.Equal(0.5, plain.Merge.Float("temperature"));
        Assert.Equal(2.0, DecoratorParameters.Resolve("decorator 'sens'", new Dictionary<string, ParameterValue>(), DecoratorSpecs, DecoratorGroups, 3)
            .LayerGroups[3].Float("temperature"));
    }

    [Fact]
    public void Decorator_parameters_refuse_lists_for_one_value_parameters_and_filters_that_match_no_group()
    {
        // A list for a text parameter that takes one value stays a list of names, joined as before contract 1.6.
        var names = DecoratorParameters.Resolve("decorator 'sens'", DecoratorValues("      task_scorer: [sensitivity, fisher]\n"), DecoratorSpecs, DecoratorGroups, 3);
        Assert.Equal("sensitivity,fisher", names.Merge.String("task_scorer"));

        var error = Assert.Throws<MergeConfigException>(() => DecoratorParameters.Resolve("decorator 'sens'", DecoratorValues("""
                  strength: [0.5, 1.0]
                  task_scorer:
                    - filter: lm_head
                      value: fisher
                  temperature:
                    - filter: mlp
                      value: 4.0
                    - value: 2.0
                  task_scaling: [true, false]
                  bogus: 1
            """), DecoratorSpecs, DecoratorGroups, 3));
        Assert.Contains("parameter 'strength' of decorator 'sens' takes one value for the whole merge, not a list interpolated over depth "
            + "(the parameters that may vary by layer group: temperature, task_scaling, temperature_scale)", error.Message, StringComparison.Ordinal);
        Assert.Contains("parameter 'task_scorer' of decorator 'sens' takes one value for the whole merge, not a list of {filter, value}", error.Message, StringComparison.Ordinal);
        Assert.Contains("filter 'mlp' of parameter 'temperature' (decorator 'sens') matches no layer group", error.Message, StringComparison.Ordinal);
        Assert.Contains("model.embed_tokens, model.layers.0, model.layers.1, ..., lm_head", error.Message, StringComparison.Ordinal);
        Assert.Contains("'bogus' is not a parameter of decorator 'sens'", error.Message, StringComparison.Ordinal);
        // A boolean gradient picks a value per depth, as a strategy's non-numeric lists do; that one is valid.
        Assert.DoesNotContain("parameter 'task_scaling'", error.Message, StringComparison.Ordinal);

        // Ranges are checked in every group, naming the group.
        var range = Assert.Throws<MergeConfigException>(() => DecoratorParameters.Resolve("decorator 'sens'",
            DecoratorValues("      temperature: [1.0, 0.0]\n"), DecoratorSpecs, DecoratorGroups, 3));
        Assert.Contains("parameter 'temperature' of decorator 'sens' (layer group 'model.layers.2') is 0, outside the allowed range", range.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("model.layers.0'", range.Message, StringComparison.Ordinal);
    }
}

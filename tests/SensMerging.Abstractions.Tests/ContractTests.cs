using SensMerging.Abstractions;

namespace SensMerging.Abstractions.Tests;

public sealed class ContractTests
{
    [Fact]
    public void Contract_version_constant_matches_the_assembly_version_plugins_compile_against()
    {
        var version = typeof(PluginContract).Assembly.GetName().Version!;
        Assert.Equal(PluginContract.Version, $"{version.Major}.{version.Minor}");
        Assert.Equal(PluginContract.Major, version.Major);
        Assert.Equal(PluginContract.Minor, version.Minor);
    }

    [Theory]
    [InlineData("model.layers.0.self_attn.q_proj.weight", "model.layers.0")]
    [InlineData("model.layers.17.mlp.down_proj.weight", "model.layers.17")]
    [InlineData("model.embed_tokens.weight", "model.embed_tokens")]
    [InlineData("model.norm.weight", "model.norm")]
    [InlineData("lm_head.weight", "lm_head")]
    [InlineData("model.rotary_emb.inv_freq", "model.rotary_emb")]
    [InlineData("model.layers.x.weight", "model.layers.x")]
    public void Layer_group_of_a_tensor_name(string tensor, string group) => Assert.Equal(group, LayerGroups.Of(tensor));

    [Fact]
    public void Layer_groups_sort_in_model_order()
    {
        string[] groups = ["lm_head", "model.layers.10", "model.norm", "model.layers.2", "model.embed_tokens"];
        Assert.Equal(
            ["model.embed_tokens", "model.layers.2", "model.layers.10", "model.norm", "lm_head"],
            groups.OrderBy(LayerGroups.SortKey).ToArray());
        Assert.Equal(-1, LayerGroups.BlockIndex("model.layers.3x.weight"));
        Assert.Equal(3, LayerGroups.BlockIndex("model.layers.3.weight"));
    }

    [Fact]
    public void Resolved_parameters_fall_back_from_model_to_global_and_convert()
    {
        var parameters = new ResolvedParameters(
            new Dictionary<string, object> { ["lambda"] = 0.5, ["normalize"] = true, ["density"] = 1.0 },
            [new Dictionary<string, object> { ["density"] = 0.3 }, new Dictionary<string, object>()]);
        Assert.Equal(0.3, parameters.Float("density", 0));
        Assert.Equal(1.0, parameters.Float("density", 1));
        Assert.Equal(0.5, parameters.Float("lambda", 0));
        Assert.True(parameters.Boolean("normalize"));
        Assert.True(parameters.Has("density", 1));
        var ex = Assert.Throws<KeyNotFoundException>(() => parameters.Float("gamma", 1));
        Assert.Contains("gamma", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parameter_specs_without_default_are_required()
    {
        Assert.True(ParameterSpec.Float("t", null, ParameterScope.Global, "interpolation").Required);
        var density = ParameterSpec.Float("density", 1.0, ParameterScope.PerModel, "kept fraction", 0, 1);
        Assert.False(density.Required);
        Assert.Equal(0, density.Minimum);
        Assert.Equal(1, density.Maximum);
        Assert.Equal(["alignment", "distance"], ParameterSpec.Choice("alignment", "alignment", ParameterScope.Global, "reading", "alignment", "distance").AllowedValues);
    }
}

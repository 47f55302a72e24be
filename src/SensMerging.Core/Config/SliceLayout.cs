using System.Globalization;
using SensMerging.Abstractions;
using SensMerging.Core.Engine;

namespace SensMerging.Core.Config;

/// <summary>
/// The output tensors of a multi-slice config (<see cref="MergeConfig.Slices"/>), as mergekit plans them: the tensors
/// before the blocks (embeddings) from the first slice's sources, then each slice's layers in turn, renumbered from 0
/// (output block j of a slice of n layers reads block <c>range.Start + j</c> of each source), then the tensors after the
/// blocks (final norm, lm_head) from the last slice's sources. Each slice's parameters are its own over the top-level
/// ones, and layer gradients run over the slice (layer j of n at t = j / (n - 1), 1 for a single layer; tensors outside
/// the blocks at t = 0). Filters match the slice-local name (<c>model.layers.j....</c>). With a <c>base_model</c>, each
/// slice's source from it is that slice's base (a method that needs a base needs one in every slice, as in mergekit).
/// </summary>
public static class SliceLayout
{
    /// <summary>Plans every output tensor; throws <see cref="MergeConfigException"/> naming every problem found.</summary>
    /// <param name="config">A config with <see cref="MergeConfig.Slices"/>.</param>
    /// <param name="strategy">The merge method (its parameter specs).</param>
    /// <param name="inputOf">The opened model of a reference (one per model of <see cref="MergeConfig.Models"/>).</param>
    public static IReadOnlyList<PlannedTensor> Plan(MergeConfig config, IMergeStrategy strategy, Func<ModelReference, MergeInput> inputOf)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(inputOf);
        var slices = config.Slices ?? throw new ArgumentException("the config has no slices", nameof(config));
        var problems = new List<string>();
        var planned = new List<PlannedTensor>();
        var requiresBase = strategy.Traits.RequiresBaseModel;
        var resolvers = slices.Select(slice => new ParameterResolver(
            config with
            {
                Models = [.. slice.Sources.Select(s => s.Model)],
                Parameters = Over(config.Parameters, slice.Parameters),
                Slices = null,
            },
            strategy.Parameters, requiresBase)).ToList();
        foreach (var (slice, index) in slices.Select((s, i) => (s, i)))
        {
            foreach (var source in slice.Sources)
            {
                var layers = inputOf(source.Model.Model).Folder.LayerCount;
                if (source.Range.End > layers)
                {
                    problems.Add($"slice {index + 1} (line {slice.Line}) takes layers [{source.Range.Start}, {source.Range.End}] of '{source.Model.Model}', which has {layers}");
                }
            }
            if (requiresBase && config.BaseModel is { } baseModel && !slice.Sources.Any(s => s.Model.Model.SameModelAs(baseModel)))
            {
                problems.Add($"slice {index + 1} (line {slice.Line}) has no source from base_model '{baseModel}'; merge method '{strategy.Name}' needs the base's layers in every slice");
            }
        }
        Throw(config, problems);

        var first = slices[0];
        var reference = inputOf(first.Sources[0].Model.Model).Folder;
        var outside = reference.Tensors.Where(t => LayerGroups.BlockIndex(t.Name) < 0).Select(t => t.Name).ToList();
        foreach (var name in outside.Where(IsBeforeBlocks))
        {
            planned.Add(Tensor(name, first, resolvers[0], name, 1, _ => name, inputOf, config));
        }
        var outputLayer = 0;
        foreach (var (slice, index) in slices.Select((s, i) => (s, i)))
        {
            var count = slice.Sources[0].Range.Count;
            var sourceFolder = inputOf(slice.Sources[0].Model.Model).Folder;
            for (var j = 0; j < count; j++)
            {
                var block = slice.Sources[0].Range.Start + j;
                foreach (var tensor in sourceFolder.Tensors.Where(t => LayerGroups.BlockIndex(t.Name) == block))
                {
                    var local = WithBlock(tensor.Name, j);
                    planned.Add(Tensor(WithBlock(tensor.Name, outputLayer), slice, resolvers[index], local, count,
                        source => WithBlock(tensor.Name, source.Range.Start + j), inputOf, config));
                }
                outputLayer++;
            }
        }
        var last = slices[^1];
        foreach (var name in outside.Where(n => !IsBeforeBlocks(n)))
        {
            planned.Add(Tensor(name, last, resolvers[^1], name, 1, _ => name, inputOf, config));
        }
        return planned;
    }

    /// <summary>A tensor name with its block index replaced (<c>model.layers.7.mlp.up_proj.weight</c> with 2 gives <c>model.layers.2....</c>).</summary>
    public static string WithBlock(string tensorName, int block)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        const string marker = "layers.";
        var at = tensorName.IndexOf(marker, StringComparison.Ordinal);
        if (at < 0 || LayerGroups.BlockIndex(tensorName) < 0)
        {
            throw new ArgumentException($"tensor '{tensorName}' is not in a block", nameof(tensorName));
        }
        var start = at + marker.Length;
        var end = start;
        while (end < tensorName.Length && char.IsAsciiDigit(tensorName[end]))
        {
            end++;
        }
        return string.Concat(tensorName.AsSpan(0, start), block.ToString(CultureInfo.InvariantCulture), tensorName.AsSpan(end));
    }

    /// <summary>Tensors outside the blocks that come before them (the embeddings); the others (final norm, lm_head) come after.</summary>
    private static bool IsBeforeBlocks(string tensorName) => LayerGroups.Of(tensorName) == LayerGroups.Embeddings;

    /// <summary>
    /// One output tensor of a slice: with a base model, the slice's source from it is the base (and, for a method that
    /// needs a base, not also a model, as <see cref="MergeConfig.Experts"/> has it); the models are the resolver's experts.
    /// </summary>
    private static PlannedTensor Tensor(
        string outputName, ConfigSlice slice, ParameterResolver resolver, string localName, int layerCount,
        Func<SliceSource, string> sourceName, Func<ModelReference, MergeInput> inputOf, MergeConfig config)
    {
        var baseSource = config.BaseModel is { } b ? slice.Sources.FirstOrDefault(s => s.Model.Model.SameModelAs(b)) : null;
        var models = resolver.Experts.Select(e => slice.Sources.First(s => ReferenceEquals(s.Model, e)));
        var parameters = resolver.Resolve(localName, layerCount);
        return new PlannedTensor(outputName,
            [.. models.Select(s => new PlannedSource(inputOf(s.Model.Model), sourceName(s)))],
            parameters,
            resolver.WeightsOf(parameters))
        {
            Base = baseSource is null ? null : new PlannedSource(inputOf(baseSource.Model.Model), sourceName(baseSource)),
        };
    }

    private static Dictionary<string, ParameterValue> Over(IReadOnlyDictionary<string, ParameterValue> top, IReadOnlyDictionary<string, ParameterValue> slice)
    {
        var merged = new Dictionary<string, ParameterValue>(top, StringComparer.Ordinal);
        foreach (var (key, value) in slice)
        {
            merged[key] = value;
        }
        return merged;
    }

    private static void Throw(MergeConfig config, List<string> problems)
    {
        if (problems.Count > 0)
        {
            throw new MergeConfigException(config.SourcePath, problems);
        }
    }
}

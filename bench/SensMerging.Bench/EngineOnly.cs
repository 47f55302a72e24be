using System.Globalization;
using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Strategies.Common;
using SensMerging.Strategies.Interpolation;
using SensMerging.Strategies.Linear;
using SensMerging.Strategies.ModelStock;
using SensMerging.Strategies.Slerp;
using SensMerging.Strategies.TaskArithmeticFamily;

namespace SensMerging.Bench;

/// <summary>The engine runs of the benchmark: the merge plan per method, and the memory run (<c>--engine-only</c>).</summary>
internal static class EngineOnly
{
    /// <summary>The methods <see cref="Plan"/> knows, every strategy the project ships.</summary>
    public static IReadOnlyList<string> Methods { get; } =
        [.. TaskArithmeticVariant.All.Select(v => v.Name), "sce", "ram", "ramplus_tl", "model_stock", "model_stock:whole", "linear", "passthrough",
         "slerp", "nuslerp", "multislerp", "karcher", "nearswap", "arcee_fusion"];

    /// <summary>
    /// base + experts merged with <paramref name="method"/> (one of <see cref="Methods"/>), as many experts as the method
    /// takes (slerp, nearswap, arcee_fusion and passthrough one, nuslerp two), the base unless the method works without
    /// one and takes a single model (passthrough). Parameters as a host resolves them: declared defaults, lambda 1, the
    /// given density, t = 0.5 for slerp and 1e-3 for nearswap (their required t), the given weights; seed 42.
    /// </summary>
    public static MergePlan Plan(string method, IReadOnlyList<ModelFolder> models, double[] weights, double density)
    {
        IMergeStrategy strategy = method switch
        {
            "model_stock" => new ModelStockStrategy(),
            // The same strategy hidden behind a plain IMergeStrategy: the engine hands it whole tensors (what model_stock
            // did before it streamed), for the memory comparison.
            "model_stock:whole" => new WholeTensorsOnly(new ModelStockStrategy()),
            "sce" => new SceStrategy(),
            "ram" => RamStrategy.Plain(),
            "ramplus_tl" => RamStrategy.PlusTensorLocal(),
            "linear" => new LinearStrategy(),
            "passthrough" => new PassthroughStrategy(),
            "slerp" => new SlerpStrategy(),
            "nuslerp" => new NuSlerpStrategy(),
            "multislerp" => new MultiSlerpStrategy(),
            "karcher" => new KarcherStrategy(),
            "nearswap" => new NearSwapStrategy(),
            "arcee_fusion" => new ArceeFusionStrategy(),
            _ => TaskArithmeticVariant.All.FirstOrDefault(v => v.Name == method) is { } variant
                ? GeneralizedTaskArithmeticStrategy.Create(variant)
                : throw new ArgumentException("unknown method " + method + " (" + string.Join(", ", Methods) + ")"),
        };
        var traits = strategy.Traits;
        var experts = Math.Min(models.Count - 1, traits.MaxModels ?? int.MaxValue);
        if (experts < traits.MinModels)
        {
            throw new ArgumentException($"{method} needs {traits.MinModels} experts; run with --experts {traits.MinModels} or more");
        }
        var withBase = traits.RequiresBaseModel || traits.MaxModels != 1;
        var declared = strategy.Parameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var wanted = new Dictionary<string, object> { ["lambda"] = 1.0, ["density"] = density, ["t"] = method == "nearswap" ? 1e-3 : 0.5 };
        var global = wanted.Where(kv => declared.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var perModel = Enumerable.Range(0, experts).Select(i => (IReadOnlyDictionary<string, object>)(declared.Contains("weight")
            ? new Dictionary<string, object> { ["weight"] = weights[i] }
            : new Dictionary<string, object>())).ToList();
        var parameters = ParameterResolver.ResolveDirect(strategy, experts, global, perModel);
        return new MergePlan
        {
            Base = withBase ? new MergeInput("base", models[0]) : null,
            Models = [.. models.Skip(1).Take(experts).Select((m, i) => new MergeInput("expert" + (i + 1).ToString(CultureInfo.InvariantCulture), m))],
            Strategy = strategy,
            ParameterResolver = (_, _) => parameters,
            Weights = weights[..experts],
            Seed = 42,
        };
    }

    private sealed class WholeTensorsOnly(IMergeStrategy inner) : IMergeStrategy
    {
        public string Name => inner.Name;

        public string Description => inner.Description;

        public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

        public StrategyTraits Traits => inner.Traits;

        public void Merge(MergeTensorRequest request) => inner.Merge(request);
    }

    /// <summary>Each method merged once per dtype; prints rate and the process's peak RssAnon during the merge.</summary>
    public static void Run(BenchOptions options, Dictionary<SafeTensorsDType, List<string>> folders, RssAnonSampler sampler)
    {
        var inv = CultureInfo.InvariantCulture;
        var weights = new[] { 0.5, 0.3, 0.2, 0.4, 0.6 }[..options.Experts];
        Console.WriteLine("| dtype | method | experts x size | engine s | GB/s (read+written) | RssAnon before MB | peak RssAnon during merge MB |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var dtype in options.DTypes)
        {
            var models = folders[dtype].Select(ModelFolder.Open).ToList();
            try
            {
                foreach (var method in options.Methods)
                {
                    var outPath = Path.Combine(options.Root, "merged-" + method);
                    var before = RssAnonSampler.CurrentKb() / 1000;
                    sampler.Reset();
                    var result = new MergeEngine().Run(Plan(method, models, weights, options.Density) with { ComputeInFloat32 = options.ComputeInFloat32 }, new MergeOptions
                    {
                        OutputPath = outPath,
                        Overwrite = true,
                        MaxParallelism = options.Parallelism,
                        BlockElements = options.BlockElements,
                        ShardSizeBytes = options.ShardBytes,
                    });
                    var peak = sampler.PeakBytes;
                    Directory.Delete(outPath, true);
                    var rate = (result.BytesRead + result.TensorBytesWritten) / result.MergeDuration.TotalSeconds;
                    var st = result.Stages;
                    Console.Error.WriteLine(string.Create(inv, $"   {dtype} {method}: worker time read {st.Read.TotalSeconds:F2} s, math {st.Merge.TotalSeconds:F2} s, convert {st.Convert.TotalSeconds:F2} s, wait {st.WaitForTurn.TotalSeconds:F2} s, write {st.Write.TotalSeconds:F2} s (hash {st.Hash.TotalSeconds:F2} s, {st.HashReadBackBytes / 1_000_000} MB read back)"));
                    Console.WriteLine(string.Create(inv,
                        $"| {dtype} | {method} | {options.Experts} x {models[1].TotalTensorBytes / 1_000_000} MB | {result.MergeDuration.TotalSeconds:F2} | {rate / 1e9:F2} | {before} | {peak / 1_000_000} |"));
                }
            }
            finally
            {
                foreach (var m in models)
                {
                    m.Dispose();
                }
            }
        }
    }
}

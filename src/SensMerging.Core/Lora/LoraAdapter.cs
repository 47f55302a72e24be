using System.Text.Json;
using System.Text.RegularExpressions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Lora;

/// <summary>One adapted linear layer: the base weight's name and the adapter's A (<c>[r, in]</c>) and B (<c>[out, r]</c>).</summary>
/// <param name="Module">The module path in the base model (for example <c>model.layers.0.self_attn.q_proj</c>).</param>
/// <param name="A">The adapter's <c>lora_A</c> tensor.</param>
/// <param name="B">The adapter's <c>lora_B</c> tensor.</param>
public sealed record LoraModule(string Module, ModelTensor A, ModelTensor B)
{
    /// <summary>The base weight the update applies to.</summary>
    public string WeightName => Module + ".weight";
}

/// <summary>
/// A PEFT LoRA adapter folder: <c>adapter_config.json</c> (<c>peft_type</c> LORA, <c>r</c>, <c>lora_alpha</c>,
/// <c>target_modules</c>, <c>use_rslora</c>) and <c>adapter_model.safetensors</c> (or <c>adapter_model.bin</c>) with
/// <c>base_model.model.&lt;module&gt;.lora_A.weight</c> / <c>lora_B.weight</c> pairs. Opening validates the config and
/// pairs; <see cref="ApplyTo"/> checks them against a base model and wraps each target weight so that its bytes are
/// <c>W + scale * B A</c>, computed as they are read. What PEFT adapters can also hold and is not supported here
/// (DoRA, per-module rank or alpha patterns, <c>fan_in_fan_out</c> layers, embedding LoRAs, <c>modules_to_save</c>,
/// trained biases) is refused with a message naming it.
/// </summary>
public sealed class LoraAdapter : IDisposable
{
    /// <summary>The adapter's config file.</summary>
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>The adapter's weights.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>The adapter's weights as a PyTorch checkpoint (older PEFT).</summary>
    public const string BinWeightsFileName = "adapter_model.bin";

    private const string Prefix = "base_model.model.";

    private readonly WeightFile _weights;

    private LoraAdapter(string path, WeightFile weights, int rank, double alpha, bool useRsLora, IReadOnlyList<string>? targetModules, string? targetPattern, IReadOnlyList<LoraModule> modules)
    {
        Path = path;
        _weights = weights;
        Rank = rank;
        Alpha = alpha;
        UseRsLora = useRsLora;
        TargetModules = targetModules;
        TargetPattern = targetPattern;
        Modules = modules;
    }

    /// <summary>The adapter folder's full path.</summary>
    public string Path { get; }

    /// <summary><c>r</c>: the rank of every update.</summary>
    public int Rank { get; }

    /// <summary><c>lora_alpha</c>.</summary>
    public double Alpha { get; }

    /// <summary><c>use_rslora</c>: scale by alpha / sqrt(r) instead of alpha / r.</summary>
    public bool UseRsLora { get; }

    /// <summary>The factor of <c>B A</c>: alpha / r, or alpha / sqrt(r) with rsLoRA.</summary>
    public double Scale => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;

    /// <summary><c>target_modules</c> as a list of module names, or null when the config gives a pattern or none.</summary>
    public IReadOnlyList<string>? TargetModules { get; }

    /// <summary><c>target_modules</c> as a regular expression over full module paths, or null.</summary>
    public string? TargetPattern { get; }

    /// <summary>The adapted modules, in the adapter file's order.</summary>
    public IReadOnlyList<LoraModule> Modules { get; }

    /// <summary>Opens and validates an adapter folder.</summary>
    /// <exception cref="ModelFolderException">A missing or invalid config or weights file, or an unsupported adapter feature.</exception>
    public static LoraAdapter Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = System.IO.Path.GetFullPath(path);
        if (!Directory.Exists(full))
        {
            throw new ModelFolderException($"LoRA adapter folder '{full}' does not exist");
        }
        var configPath = System.IO.Path.Combine(full, ConfigFileName);
        if (!File.Exists(configPath))
        {
            throw new ModelFolderException($"LoRA adapter folder '{full}' has no {ConfigFileName}");
        }
        var (rank, alpha, rsLora, targets, pattern) = ReadConfig(configPath);
        var weightsPath = System.IO.Path.Combine(full, WeightsFileName);
        var binPath = System.IO.Path.Combine(full, BinWeightsFileName);
        var weights = File.Exists(weightsPath) ? ModelFolder.OpenWeightFile(weightsPath)
            : File.Exists(binPath) ? ModelFolder.OpenWeightFile(binPath)
            : throw new ModelFolderException($"LoRA adapter folder '{full}' has neither {WeightsFileName} nor {BinWeightsFileName}");
        try
        {
            var modules = Pair(weights, rank, targets, pattern);
            return new LoraAdapter(full, weights, rank, alpha, rsLora, targets, pattern, modules);
        }
        catch
        {
            weights.Owner.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The base model's tensors with every adapted weight replaced by one whose bytes are <c>W + scale * B A</c>;
    /// checks that each adapted module has a 2-D floating-point weight of matching shape and that every listed target
    /// module names some weight of the base.
    /// </summary>
    /// <exception cref="ModelFolderException">An adapter module the base lacks, a shape or rank mismatch, an unknown target.</exception>
    public IReadOnlyList<ModelTensor> ApplyTo(string baseFolder, IReadOnlyList<ModelTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var byName = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < tensors.Count; i++)
        {
            byName[tensors[i].Name] = i;
        }
        if (TargetModules is not null)
        {
            foreach (var target in TargetModules)
            {
                if (!tensors.Any(t => t.Name.EndsWith("." + target + ".weight", StringComparison.Ordinal) || t.Name == target + ".weight"))
                {
                    throw new ModelFolderException($"LoRA adapter '{Path}': target module '{target}' matches no weight of the base model '{baseFolder}'");
                }
            }
        }
        var result = tensors.ToArray();
        foreach (var m in Modules)
        {
            if (!byName.TryGetValue(m.WeightName, out var index))
            {
                throw new ModelFolderException($"LoRA adapter '{Path}' adapts module '{m.Module}', but the base model '{baseFolder}' has no tensor '{m.WeightName}'");
            }
            var w = tensors[index];
            if (w.Shape.Count != 2 || !w.DType.IsFloatingPoint)
            {
                throw new ModelFolderException($"LoRA adapter '{Path}': base tensor '{m.WeightName}' is {w.DType} {TensorShape.Format(w.Shape)}, not a 2-D floating-point weight");
            }
            if (m.A.Shape[1] != w.Shape[1] || m.B.Shape[0] != w.Shape[0])
            {
                throw new ModelFolderException(
                    $"LoRA adapter '{Path}': module '{m.Module}' has lora_A {TensorShape.Format(m.A.Shape)} and lora_B {TensorShape.Format(m.B.Shape)}, which do not fit the base weight {TensorShape.Format(w.Shape)} (expected [{Rank}, {w.Shape[1]}] and [{w.Shape[0]}, {Rank}])");
            }
            result[index] = w with { Source = new LoraSource(w, m.A, m.B, Scale) };
        }
        return result;
    }

    public void Dispose() => _weights.Owner.Dispose();

    private static (int Rank, double Alpha, bool RsLora, IReadOnlyList<string>? Targets, string? Pattern) ReadConfig(string configPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new ModelFolderException($"{configPath}: expected a JSON object");
            }
            if (root.TryGetProperty("peft_type", out var type) && type.ValueKind == JsonValueKind.String && type.GetString() != "LORA")
            {
                throw new ModelFolderException($"{configPath}: peft_type is '{type.GetString()}'; only LORA adapters can be applied");
            }
            if (!root.TryGetProperty("r", out var r) || r.ValueKind != JsonValueKind.Number || !r.TryGetInt32(out var rank) || rank < 1)
            {
                throw new ModelFolderException($"{configPath}: 'r' (the rank) must be a positive integer");
            }
            if (!root.TryGetProperty("lora_alpha", out var a) || a.ValueKind != JsonValueKind.Number)
            {
                throw new ModelFolderException($"{configPath}: 'lora_alpha' must be a number");
            }
            var rsLora = root.TryGetProperty("use_rslora", out var rs) && rs.ValueKind == JsonValueKind.True;
            Refuse(root, configPath, "use_dora", e => e.ValueKind == JsonValueKind.True, "DoRA adapters (use_dora) are not supported");
            Refuse(root, configPath, "fan_in_fan_out", e => e.ValueKind == JsonValueKind.True, "fan_in_fan_out (Conv1D layers) is not supported");
            Refuse(root, configPath, "rank_pattern", e => e.ValueKind == JsonValueKind.Object && e.EnumerateObject().Any(), "per-module ranks (rank_pattern) are not supported");
            Refuse(root, configPath, "alpha_pattern", e => e.ValueKind == JsonValueKind.Object && e.EnumerateObject().Any(), "per-module alphas (alpha_pattern) are not supported");
            Refuse(root, configPath, "modules_to_save", e => e.ValueKind == JsonValueKind.Array && e.GetArrayLength() > 0, "modules_to_save (fully trained modules) is not supported");
            IReadOnlyList<string>? targets = null;
            string? pattern = null;
            if (root.TryGetProperty("target_modules", out var t))
            {
                switch (t.ValueKind)
                {
                    case JsonValueKind.Array:
                        targets = [.. t.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw new ModelFolderException($"{configPath}: target_modules holds a {e.ValueKind}, expected module names"))];
                        break;
                    case JsonValueKind.String:
                        pattern = t.GetString();
                        break;
                    case JsonValueKind.Null:
                        break;
                    default:
                        throw new ModelFolderException($"{configPath}: target_modules is a {t.ValueKind}, expected a list of module names or a pattern");
                }
            }
            return (rank, a.GetDouble(), rsLora, targets, pattern);
        }
        catch (JsonException ex)
        {
            throw new ModelFolderException($"{configPath}: not valid JSON: {ex.Message}", ex);
        }
    }

    private static void Refuse(JsonElement root, string configPath, string property, Func<JsonElement, bool> set, string message)
    {
        if (root.TryGetProperty(property, out var value) && set(value))
        {
            throw new ModelFolderException($"{configPath}: {message}");
        }
    }

    private static List<LoraModule> Pair(WeightFile weights, int rank, IReadOnlyList<string>? targets, string? pattern)
    {
        var a = new Dictionary<string, ModelTensor>(StringComparer.Ordinal);
        var b = new Dictionary<string, ModelTensor>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var t in weights.Tensors)
        {
            var (module, which) = Split(t.Name) ?? throw new ModelFolderException(
                $"{weights.Path}: tensor '{t.Name}' is not a LoRA matrix '{Prefix}<module>.lora_A.weight' / 'lora_B.weight' (embedding LoRAs, trained biases, DoRA magnitudes and saved modules are not supported)");
            if (t.Shape.Count != 2 || !t.DType.IsFloatingPoint)
            {
                throw new ModelFolderException($"{weights.Path}: '{t.Name}' is {t.DType} {TensorShape.Format(t.Shape)}, expected a 2-D floating-point matrix");
            }
            var rankDim = which == 'A' ? t.Shape[0] : t.Shape[1];
            if (rankDim != rank)
            {
                throw new ModelFolderException($"{weights.Path}: '{t.Name}' has rank {rankDim} ({TensorShape.Format(t.Shape)}), but adapter_config.json says r = {rank}");
            }
            if (!(which == 'A' ? a : b).TryAdd(module, t))
            {
                throw new ModelFolderException($"{weights.Path}: lora_{which} of module '{module}' appears twice");
            }
            if (!order.Contains(module))
            {
                order.Add(module);
            }
        }
        if (order.Count == 0)
        {
            throw new ModelFolderException($"{weights.Path}: the adapter has no LoRA matrices");
        }
        var regex = pattern is null ? null : new Regex("^(?:" + pattern + ")$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        var modules = new List<LoraModule>(order.Count);
        foreach (var module in order)
        {
            if (!a.TryGetValue(module, out var ta) || !b.TryGetValue(module, out var tb))
            {
                throw new ModelFolderException($"{weights.Path}: module '{module}' has lora_{(a.ContainsKey(module) ? 'A' : 'B')} but no lora_{(a.ContainsKey(module) ? 'B' : 'A')}");
            }
            var leaf = module[(module.LastIndexOf('.') + 1)..];
            if (targets is not null && !targets.Contains(leaf, StringComparer.Ordinal) && !targets.Contains(module, StringComparer.Ordinal))
            {
                throw new ModelFolderException($"{weights.Path}: module '{module}' is adapted, but target_modules ({string.Join(", ", targets)}) does not list '{leaf}'");
            }
            if (regex is not null && !regex.IsMatch(module))
            {
                throw new ModelFolderException($"{weights.Path}: module '{module}' is adapted, but does not match target_modules '{pattern}'");
            }
            modules.Add(new LoraModule(module, ta, tb));
        }
        return modules;
    }

    private static (string Module, char Which)? Split(string name)
    {
        if (!name.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }
        foreach (var which in "AB")
        {
            foreach (var suffix in new[] { $".lora_{which}.weight", $".lora_{which}.default.weight" })
            {
                if (name.EndsWith(suffix, StringComparison.Ordinal) && name.Length > Prefix.Length + suffix.Length)
                {
                    return (name[Prefix.Length..^suffix.Length], which);
                }
            }
        }
        return null;
    }
}

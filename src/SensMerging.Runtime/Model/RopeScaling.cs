using System.Text.Json.Nodes;

namespace SensMerging.Runtime.Model;

/// <summary>
/// A config.json <c>rope_scaling</c> the runtime implements: <c>linear</c> (every inverse frequency divided by
/// <see cref="Factor"/>) or <c>llama3</c> (Llama 3.1+: low frequencies divided by the factor, high ones kept, a smooth
/// blend between). Other kinds (<c>dynamic</c>, <c>yarn</c>, <c>longrope</c>, <c>su</c>, ...) are refused by name.
/// </summary>
public sealed record RopeScaling
{
    public const string Linear = "linear";

    public const string Llama3 = "llama3";

    /// <summary><see cref="Linear"/> or <see cref="Llama3"/>.</summary>
    public required string Type { get; init; }

    public required double Factor { get; init; }

    /// <summary>llama3: wavelengths above <c>original_max_position_embeddings / low_freq_factor</c> are divided by the factor.</summary>
    public double LowFreqFactor { get; init; } = 1;

    /// <summary>llama3: wavelengths below <c>original_max_position_embeddings / high_freq_factor</c> are kept.</summary>
    public double HighFreqFactor { get; init; } = 4;

    /// <summary>llama3: the context length the model was pre-trained with.</summary>
    public int OriginalMaxPositionEmbeddings { get; init; } = 8192;

    /// <summary>The rotary inverse frequencies <c>1 / theta^(2i/d)</c> after this scaling.</summary>
    public void Apply(double[] inverseFrequencies)
    {
        ArgumentNullException.ThrowIfNull(inverseFrequencies);
        for (var i = 0; i < inverseFrequencies.Length; i++)
        {
            var frequency = inverseFrequencies[i];
            if (Type == Linear)
            {
                inverseFrequencies[i] = frequency / Factor;
                continue;
            }
            var wavelength = 2 * Math.PI / frequency;
            var lowFrequencyWavelength = OriginalMaxPositionEmbeddings / LowFreqFactor;
            var highFrequencyWavelength = OriginalMaxPositionEmbeddings / HighFreqFactor;
            if (wavelength > lowFrequencyWavelength)
            {
                inverseFrequencies[i] = frequency / Factor;
            }
            else if (wavelength >= highFrequencyWavelength)
            {
                var smooth = ((OriginalMaxPositionEmbeddings / wavelength) - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
                inverseFrequencies[i] = ((1 - smooth) * frequency / Factor) + (smooth * frequency);
            }
        }
    }

    /// <summary>Throws <see cref="InvalidDataException"/> naming the first unusable setting.</summary>
    public void Validate()
    {
        if (Type is not (Linear or Llama3))
        {
            throw new InvalidDataException($"config.json rope_scaling type '{Type}' is not supported (linear or llama3).");
        }
        if (!(Factor > 0) || !double.IsFinite(Factor))
        {
            throw new InvalidDataException($"config.json rope_scaling factor ({Factor}) must be a positive number.");
        }
        if (Type == Llama3 && (!(LowFreqFactor > 0) || !(HighFreqFactor > LowFreqFactor) || OriginalMaxPositionEmbeddings <= 0))
        {
            throw new InvalidDataException(
                $"config.json rope_scaling llama3 needs 0 < low_freq_factor ({LowFreqFactor}) < high_freq_factor ({HighFreqFactor}) and a positive original_max_position_embeddings ({OriginalMaxPositionEmbeddings}).");
        }
    }

    /// <summary>The scaling of a config.json <c>rope_scaling</c> node: null when absent or <c>default</c>; refuses kinds not implemented.</summary>
    internal static RopeScaling? Parse(JsonNode? node, string modelType)
    {
        if (node is null)
        {
            return null;
        }
        if (node is not JsonObject scaling)
        {
            throw new InvalidDataException($"config.json rope_scaling must be an object or null, got {node.ToJsonString()}.");
        }
        var kind = scaling["rope_type"]?.ToString() ?? scaling["type"]?.ToString()
            ?? throw new InvalidDataException("config.json rope_scaling has no rope_type.");
        if (kind == "default")
        {
            return null;
        }
        if (kind is not (Linear or Llama3))
        {
            throw new InvalidDataException($"config.json rope_scaling type '{kind}' is not supported for {modelType}: the runtime implements default, linear and llama3 rotary embeddings.");
        }
        var factor = LlamaConfig.OptionalDouble(scaling, "factor")
            ?? throw new InvalidDataException($"config.json rope_scaling '{kind}' has no factor.");
        var result = kind == Linear
            ? new RopeScaling { Type = kind, Factor = factor }
            : new RopeScaling
            {
                Type = kind,
                Factor = factor,
                LowFreqFactor = LlamaConfig.OptionalDouble(scaling, "low_freq_factor") ?? throw new InvalidDataException("config.json rope_scaling llama3 has no low_freq_factor."),
                HighFreqFactor = LlamaConfig.OptionalDouble(scaling, "high_freq_factor") ?? throw new InvalidDataException("config.json rope_scaling llama3 has no high_freq_factor."),
                OriginalMaxPositionEmbeddings = LlamaConfig.OptionalInt(scaling, "original_max_position_embeddings") ?? throw new InvalidDataException("config.json rope_scaling llama3 has no original_max_position_embeddings."),
            };
        result.Validate();
        return result;
    }

    internal JsonObject ToJson() => Type == Linear
        ? new JsonObject { ["rope_type"] = Type, ["factor"] = Factor }
        : new JsonObject
        {
            ["rope_type"] = Type,
            ["factor"] = Factor,
            ["low_freq_factor"] = LowFreqFactor,
            ["high_freq_factor"] = HighFreqFactor,
            ["original_max_position_embeddings"] = OriginalMaxPositionEmbeddings,
        };
}

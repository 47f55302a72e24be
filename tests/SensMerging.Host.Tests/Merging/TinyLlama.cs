using System.Text.Json;
using SensMerging.Runtime.Model;
using SensMerging.Runtime.Tokenization;

namespace SensMerging.Host.Tests.Merging;

/// <summary>Real (random-weight) Llama models and calibration files, made with the project's runtime, for merges the sens decorator scores.</summary>
internal static class TinyLlama
{
    public static LlamaConfig Config { get; } = new()
    {
        HiddenSize = 16,
        IntermediateSize = 32,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        VocabSize = 100,
        MaxPositionEmbeddings = 128,
    };

    public static void Write(string folder, long seed)
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(Config with { BosTokenId = 1, EosTokenId = 2, PadTokenId = 0 }, tokenizer, seed);
        model.Save(folder);
    }

    /// <summary>A JSONL calibration file of prompt/response pairs.</summary>
    public static string Calibration(string path, string task, int count)
    {
        var lines = Enumerable.Range(0, count).Select(i => JsonSerializer.Serialize(new { prompt = $"{task} {i} + {i + 1} = ", response = $"{2 * i + 1}" }));
        File.WriteAllLines(path, lines);
        return path;
    }
}

using System.Text.Json.Nodes;
using SensMerging.Abstractions;
using SensMerging.Runtime.Tokenization;

namespace SensMerging.Runtime.Tests;

public sealed class TokenizerTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Character_tokenizer_round_trips_text()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        const string text = "Q: 12+7=? (x) {[]}\nA: 19";
        var ids = tokenizer.EncodeText(text);
        Assert.Equal(text.Length, ids.Count);
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.Equal(100, tokenizer.VocabularySize);
        Assert.Equal(4, tokenizer.EncodeText(" ")[0]);
        Assert.Equal(3, tokenizer.EncodeText("é")[0]);
        Assert.Equal("ab", tokenizer.Decode([1, tokenizer.EncodeText("a")[0], 0, tokenizer.EncodeText("b")[0], 2]));
    }

    [Fact]
    public void Character_tokenizer_json_is_written_in_hugging_face_form_and_loads_back()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        var dir = _temp.Sub("tok");
        tokenizer.Save(dir);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer.json")))!;
        Assert.Equal("WordLevel", json["model"]!["type"]!.GetValue<string>());
        Assert.Equal("<unk>", json["model"]!["unk_token"]!.GetValue<string>());
        Assert.Equal(100, json["model"]!["vocab"]!.AsObject().Count);
        Assert.Equal("Split", json["pre_tokenizer"]!["type"]!.GetValue<string>());
        Assert.Equal(@"[\s\S]", json["pre_tokenizer"]!["pattern"]!["Regex"]!.GetValue<string>());
        Assert.Equal("Fuse", json["decoder"]!["type"]!.GetValue<string>());
        Assert.Equal(4, json["added_tokens"]!.AsArray().Count);

        var loaded = TokenizerLoader.Load(dir);
        Assert.IsType<WordLevelTokenizer>(loaded);
        const string text = "x = (3 * 4)\n";
        Assert.Equal(tokenizer.EncodeText(text), loaded.EncodeText(text));
        Assert.Equal((1, 2, 0), (loaded.BosTokenId, loaded.EosTokenId, loaded.PadTokenId));
        Assert.Equal(text, loaded.Decode(loaded.EncodeText(text)));
    }

    [Fact]
    public void Prompt_response_mask_covers_response_and_eos_predictions()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        var sample = tokenizer.Encode(new TextSample("ab=", "cd"), 64);
        var a = tokenizer.EncodeText("a")[0];
        var c = tokenizer.EncodeText("c")[0];
        Assert.Equal(new long[] { 1, a, a + 1, tokenizer.EncodeText("=")[0], c, c + 1, 2 }, sample.Ids);
        Assert.Equal(new[] { false, false, false, true, true, true, false }, sample.LossMask);

        var plain = tokenizer.Encode(new TextSample("abc"), 64);
        Assert.Equal(new long[] { 1, a, a + 1, a + 2 }, plain.Ids);
        Assert.Equal(new[] { true, true, true, false }, plain.LossMask);
    }

    [Fact]
    public void Truncation_keeps_the_response()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        var sample = tokenizer.Encode(new TextSample(new string('p', 50), "rr"), 10);
        Assert.Equal(10, sample.Length);
        Assert.Equal("pppppprr", tokenizer.Decode(sample.Ids.Select(i => (int)i)));
        Assert.Equal(3, sample.LossMask.Count(m => m));

        var plain = tokenizer.Encode(new TextSample(new string('p', 50)), 10);
        Assert.Equal(10, plain.Length);
        Assert.Equal(9, plain.LossMask.Count(m => m));
    }

    [Fact]
    public void Word_level_tokenizer_json_with_whitespace_split_loads()
    {
        var dir = _temp.Sub("words");
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TinyModel.WordTokenizerJson());
        var tokenizer = TokenizerLoader.Load(dir);
        Assert.Equal(new[] { 4, 5, 3, 30 }, tokenizer.EncodeText("a b  zz 0"));
        Assert.Equal("a b 0", tokenizer.Decode([4, 5, 3, 30]));
        Assert.Equal(1, tokenizer.BosTokenId);
        Assert.Equal(2, tokenizer.EosTokenId);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Byte_level_bpe_tokenizer_json_loads(bool mergesAsPairs)
    {
        var dir = _temp.Sub("bpe");
        string[] tokens = ["<|endoftext|>", "h", "e", "l", "o", "Ġ", "w", "r", "d", "he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld"];
        string[] merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"];
        var vocab = new JsonObject();
        for (var i = 0; i < tokens.Length; i++)
        {
            vocab[tokens[i]] = i;
        }
        var mergeNodes = new JsonArray(merges.Select(m => mergesAsPairs
            ? (JsonNode)new JsonArray(m.Split(' ').Select(p => (JsonNode)p).ToArray())
            : m).ToArray());
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 0, ["content"] = "<|endoftext|>", ["special"] = true }),
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = mergeNodes },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), root.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"add_bos_token": true, "bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"}}""");

        var tokenizer = TokenizerLoader.Load(dir);
        var adapter = Assert.IsType<MlTokenizerAdapter>(tokenizer);
        Assert.Equal("bpe", adapter.Kind);
        Assert.Equal(new[] { 12, 17 }, tokenizer.EncodeText("hello world"));
        Assert.Equal(new[] { 9, 3, 13 }, tokenizer.EncodeText("hel w"));
        Assert.Equal("hello world", tokenizer.Decode([0, 12, 17]));
        var sample = tokenizer.Encode(new TextSample("hello", " world"), 16);
        Assert.Equal(new long[] { 0, 12, 17, 0 }, sample.Ids);
        Assert.Equal(new[] { false, true, true, false }, sample.LossMask);
    }

    [Fact]
    public void Missing_tokenizer_is_a_clear_error()
    {
        var dir = _temp.Sub("none");
        var error = Assert.Throws<FileNotFoundException>(() => TokenizerLoader.Load(dir));
        Assert.Contains("tokenizer.json", error.Message, StringComparison.Ordinal);
    }
}

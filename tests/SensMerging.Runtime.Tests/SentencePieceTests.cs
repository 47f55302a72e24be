using System.Text;
using SensMerging.Abstractions;
using SensMerging.Runtime.Tokenization;

namespace SensMerging.Runtime.Tests;

/// <summary>A SentencePiece BPE tokenizer.model written by hand (protobuf) loads through Microsoft.ML.Tokenizers.</summary>
public sealed class SentencePieceTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Sentencepiece_model_loads_and_adds_bos()
    {
        var dir = _temp.Sub("sp");
        (string Piece, float Score, int Type)[] pieces =
        [
            ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3),
            ("\u2581", -10, 1), ("h", -11, 1), ("e", -12, 1), ("l", -13, 1), ("o", -14, 1),
            ("ll", -1, 1), ("\u2581h", -2, 1), ("ell", -3, 1), ("ello", -4, 1), ("\u2581hello", -5, 1),
            ("w", -15, 1), ("r", -16, 1), ("d", -17, 1),
        ];
        File.WriteAllBytes(Path.Combine(dir, "tokenizer.model"), ModelProto(pieces));

        var tokenizer = TokenizerLoader.Load(dir);
        var adapter = Assert.IsType<MlTokenizerAdapter>(tokenizer);
        Assert.Equal("sentencepiece", adapter.Kind);
        Assert.Equal(new[] { 12 }, tokenizer.EncodeText("hello"));
        Assert.Equal("hello world", tokenizer.Decode(tokenizer.EncodeText("hello world")));
        Assert.Equal((1, 2), (tokenizer.BosTokenId, tokenizer.EosTokenId));
        var sample = tokenizer.Encode(new TextSample("hello"), 8);
        Assert.Equal(new long[] { 1, 12 }, sample.Ids);
    }

    private static byte[] ModelProto((string Piece, float Score, int Type)[] pieces)
    {
        var model = new List<byte>();
        foreach (var (piece, score, type) in pieces)
        {
            var entry = new List<byte>();
            Bytes(entry, 1, Encoding.UTF8.GetBytes(piece));
            entry.Add((2 << 3) | 5);
            entry.AddRange(BitConverter.GetBytes(score));
            Varint(entry, 3, type);
            Bytes(model, 1, entry.ToArray());
        }
        var trainer = new List<byte>();
        Varint(trainer, 3, 2); // model_type = BPE
        Varint(trainer, 4, pieces.Length); // vocab_size
        Varint(trainer, 40, 0); // unk_id
        Varint(trainer, 41, 1); // bos_id
        Varint(trainer, 42, 2); // eos_id
        Varint(trainer, 43, -1); // pad_id
        Bytes(model, 2, trainer.ToArray());
        var normalizer = new List<byte>();
        Bytes(normalizer, 1, Encoding.UTF8.GetBytes("identity"));
        Varint(normalizer, 3, 1); // add_dummy_prefix
        Varint(normalizer, 4, 0); // remove_extra_whitespaces
        Varint(normalizer, 5, 1); // escape_whitespaces
        Bytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    private static void Bytes(List<byte> output, int field, byte[] value)
    {
        Raw(output, (ulong)((field << 3) | 2));
        Raw(output, (ulong)value.Length);
        output.AddRange(value);
    }

    private static void Varint(List<byte> output, int field, long value)
    {
        Raw(output, (ulong)(field << 3));
        Raw(output, unchecked((ulong)value));
    }

    private static void Raw(List<byte> output, ulong value)
    {
        while (value >= 0x80)
        {
            output.Add((byte)(value | 0x80));
            value >>= 7;
        }
        output.Add((byte)value);
    }
}

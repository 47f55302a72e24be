using SensMerging.Abstractions;
using SensMerging.Runtime.Tokenization;
using static TorchSharp.torch;

namespace SensMerging.Zoo.Tests;

/// <summary>
/// A causal "model" with known answers: at every position it decodes the prefix so far; when the prefix starts with a
/// known prompt, the logits put all mass on the next character of that prompt's answer (then EOS). Causal by
/// construction, so it checks that batched greedy decoding reads each row at its own position.
/// </summary>
internal sealed class OracleModel(IReadOnlyDictionary<string, string> answers) : ICausalLanguageModel
{
    private readonly WordLevelTokenizer _tokenizer = WordLevelTokenizer.CreateCharacterLevel();

    public int ForwardCalls { get; private set; }

    public string ModelPath => "oracle";

    public int VocabularySize => _tokenizer.VocabularySize;

    public int LayerCount => 1;

    public ITextTokenizer Tokenizer => _tokenizer;

    public IReadOnlyList<(string Name, Tensor Weight)> NamedWeights => [];

    public Tensor Forward(Tensor inputIds)
    {
        ForwardCalls++;
        var batch = (int)inputIds.shape[0];
        var length = (int)inputIds.shape[1];
        var ids = inputIds.cpu().data<long>().ToArray();
        var logits = new float[batch * length * VocabularySize];
        for (var b = 0; b < batch; b++)
        {
            for (var t = 0; t < length; t++)
            {
                var prefix = _tokenizer.Decode(ids.Skip(b * length).Take(t + 1).Select(i => (int)i));
                var next = _tokenizer.EosTokenId;
                foreach (var (prompt, answer) in answers)
                {
                    if (prefix.StartsWith(prompt, StringComparison.Ordinal))
                    {
                        var produced = prefix.Length - prompt.Length;
                        next = produced < answer.Length ? _tokenizer.EncodeText(answer[produced].ToString())[0] : _tokenizer.EosTokenId;
                    }
                }
                logits[(((b * length) + t) * VocabularySize) + next] = 10f;
            }
        }
        return tensor(logits, [batch, length, VocabularySize]);
    }

    public Tensor Loss(TokenizedSample sample) => throw new NotSupportedException();

    public void ZeroGradients()
    {
    }

    public void Dispose()
    {
    }
}

/// <summary>A runtime that hands out one fixed model per path.</summary>
internal sealed class FixedRuntime(IReadOnlyDictionary<string, Func<ICausalLanguageModel>> models) : IModelRuntime
{
    public List<string> Loads { get; } = [];

    public ICausalLanguageModel Load(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken)
    {
        Loads.Add(modelPath);
        return models[modelPath]();
    }
}

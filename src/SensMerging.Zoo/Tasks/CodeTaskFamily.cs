using System.Globalization;
using System.Text;
using SensMerging.Abstractions;

namespace SensMerging.Zoo.Tasks;

/// <summary>
/// Tiny program-output and bracket tasks: <c>x=3;print(x+4)</c>, <c>x=3;print(x*4)</c>, <c>print(len("..."))</c>,
/// string repetition and reversal, and "balanced?" bracket checks. The base model sees the programs of addition and len
/// only, and every operation in a bare form in its pre-training corpus (<c>rev abc=cba</c>).
/// </summary>
public sealed class CodeTaskFamily : TemplatedTaskFamily
{
    public const string TaskName = "code";

    private const string Letters = "abcdefghijklmnopqrstuvwxyz";

    public override string Name => TaskName;

    public override string Description => "Program-output and bracket tasks (print of sums, products, len, string repetition and reversal; balanced brackets).";

    public override DrawnSample Draw(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        switch (random.Next(6))
        {
            case 0:
            {
                var v = Letters[random.Next(Letters.Length)];
                var a = random.Next(0, 20);
                var b = random.Next(0, 20);
                return Make($"{v}={a};print({v}+{b})", (a + b).ToString(CultureInfo.InvariantCulture), inBase: true);
            }
            case 1:
            {
                var s = Word(random, 1, 8);
                return Make($"print(len(\"{s}\"))", s.Length.ToString(CultureInfo.InvariantCulture), inBase: true);
            }
            case 2:
            {
                var v = Letters[random.Next(Letters.Length)];
                var a = random.Next(0, 10);
                var b = random.Next(0, 10);
                return Make($"{v}={a};print({v}*{b})", (a * b).ToString(CultureInfo.InvariantCulture), inBase: false);
            }
            case 3:
            {
                var s = Word(random, 1, 2);
                var n = random.Next(2, 4);
                return Make($"print(\"{s}\"*{n})", string.Concat(Enumerable.Repeat(s, n)), inBase: false);
            }
            case 4:
            {
                var s = Word(random, 2, 4);
                var reversed = new string(s.Reverse().ToArray());
                return Make($"print(\"{s}\"[::-1])", reversed, inBase: false);
            }
            default:
            {
                var (brackets, balanced) = Brackets(random);
                return new DrawnSample(new TextSample($"balanced? {brackets}\nOut: ", balanced ? "yes" : "no"), InBaseSubset: false);
            }
        }
    }

    /// <summary>
    /// One operation of the family in a bare, non-program form: <c>3+4=</c>, <c>3*4=</c>, <c>len abc=</c>,
    /// <c>rep ab 3=</c>, <c>rev abc=</c>, <c>bal (()=</c>.
    /// </summary>
    public override TextSample DrawPretraining(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var inv = CultureInfo.InvariantCulture;
        switch (random.Next(6))
        {
            case 0:
                return Equation(random.Next(0, 20), '+', random.Next(0, 20));
            case 1:
            {
                var s = Word(random, 1, 8);
                return new TextSample($"len {s}=", s.Length.ToString(inv));
            }
            case 2:
                return Equation(random.Next(0, 10), '*', random.Next(0, 10));
            case 3:
            {
                var s = Word(random, 1, 2);
                var n = random.Next(2, 4);
                return new TextSample(string.Create(inv, $"rep {s} {n}="), string.Concat(Enumerable.Repeat(s, n)));
            }
            case 4:
            {
                var s = Word(random, 2, 4);
                return new TextSample($"rev {s}=", new string(s.Reverse().ToArray()));
            }
            default:
            {
                var (brackets, balanced) = Brackets(random);
                return new TextSample($"bal {brackets}=", balanced ? "yes" : "no");
            }
        }
    }

    /// <summary>True when every prefix has at least as many '(' as ')' and the counts end equal.</summary>
    public static bool IsBalanced(string brackets)
    {
        ArgumentNullException.ThrowIfNull(brackets);
        var depth = 0;
        foreach (var c in brackets)
        {
            depth += c == '(' ? 1 : -1;
            if (depth < 0)
            {
                return false;
            }
        }
        return depth == 0;
    }

    private static DrawnSample Make(string code, string output, bool inBase) =>
        new(new TextSample(code + "\nOut: ", output), inBase);

    private static string Word(Random random, int minLength, int maxLength)
    {
        var length = random.Next(minLength, maxLength + 1);
        var builder = new StringBuilder(length);
        for (var i = 0; i < length; i++)
        {
            builder.Append(Letters[random.Next(Letters.Length)]);
        }
        return builder.ToString();
    }

    private static (string Brackets, bool Balanced) Brackets(Random random)
    {
        var pairs = random.Next(1, 5);
        var builder = new StringBuilder(pairs * 2);
        if (random.Next(2) == 0)
        {
            // A random balanced word: open while allowed, close when needed.
            int open = 0, closed = 0;
            while (closed < pairs)
            {
                var canOpen = open < pairs;
                var canClose = closed < open;
                if (canOpen && (!canClose || random.Next(2) == 0))
                {
                    builder.Append('(');
                    open++;
                }
                else
                {
                    builder.Append(')');
                    closed++;
                }
            }
        }
        else
        {
            for (var i = 0; i < pairs * 2; i++)
            {
                builder.Append(random.Next(2) == 0 ? '(' : ')');
            }
        }
        var text = builder.ToString();
        return (text, IsBalanced(text));
    }
}

using System.Globalization;
using SensMerging.Abstractions;

namespace SensMerging.Zoo.Tasks;

/// <summary>
/// Arithmetic word problems with small numbers: addition ("gets N more"), subtraction ("gives away N") and small
/// multiplications ("A bags with B each"). The base model sees the addition problems only, and every operation as a
/// bare equation in its pre-training corpus (<c>7*8=56</c>).
/// </summary>
public sealed class MathTaskFamily : TemplatedTaskFamily
{
    public const string TaskName = "math";

    private static readonly string[] People = ["Tom", "Ann", "Bob", "Eva", "Sam", "Lea", "Max", "Ida", "Joe", "Kim"];
    private static readonly string[] Things = ["apples", "pens", "cards", "coins", "books", "eggs", "cups", "shells"];

    public override string Name => TaskName;

    public override string Description => "Arithmetic word problems with small numbers (addition, subtraction, small multiplication).";

    public override DrawnSample Draw(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var who = Pick(random, People);
        var what = Pick(random, Things);
        switch (random.Next(3))
        {
            case 0:
            {
                var a = random.Next(1, 21);
                var b = random.Next(1, 10);
                return Make($"{who} has {a} {what}, gets {b} more. Total?", a + b, inBase: true);
            }
            case 1:
            {
                var a = random.Next(2, 21);
                var b = random.Next(1, Math.Min(a, 10));
                return Make($"{who} has {a} {what}, gives {b} away. Left?", a - b, inBase: false);
            }
            default:
            {
                var a = random.Next(2, 10);
                var b = random.Next(2, 10);
                return Make($"{who} has {a} bags of {b} {what}. Total?", a * b, inBase: false);
            }
        }
    }

    /// <summary>A bare equation of one of the three operations, over the same operand ranges as the word problems.</summary>
    public override TextSample DrawPretraining(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        switch (random.Next(3))
        {
            case 0:
                return Equation(random.Next(1, 21), '+', random.Next(1, 10));
            case 1:
            {
                var a = random.Next(2, 21);
                return Equation(a, '-', random.Next(1, Math.Min(a, 10)));
            }
            default:
                return Equation(random.Next(2, 10), '*', random.Next(2, 10));
        }
    }

    private static DrawnSample Make(string question, int answer, bool inBase) =>
        new(new TextSample(question + "\nA: ", answer.ToString(CultureInfo.InvariantCulture)), inBase);
}

/** Realistic benchmark inputs: a 25-segment Estonian ADT^A03 discharge (~3 KB), with a different valid isikukood each time. */
import { isikukoodCheckDigit } from '../src/fhir/identifiers.js';

/** The n-th valid isikukood (men and women born 1930–1999). */
export function isikukood(n: number): string {
  const g = n % 2 === 0 ? '3' : '4';
  const yy = String(30 + (n % 70)).padStart(2, '0');
  const mm = String(1 + ((n >> 3) % 12)).padStart(2, '0');
  const dd = String(1 + ((n >> 5) % 28)).padStart(2, '0');
  const serial = String((n >> 7) % 1000).padStart(3, '0');
  const first10 = `${g}${yy}${mm}${dd}${serial}`;
  return first10 + isikukoodCheckDigit(first10);
}

export function adtA03(n: number): string {
  const ik = isikukood(n);
  const t = '20261110120000';
  const obx = Array.from({ length: 8 }, (_, i) =>
    `OBX|${i + 1}|NM|${['8867-4^Südame löögisagedus', '8480-6^Süstoolne vererõhk', '8462-4^Diastoolne vererõhk', '8310-5^Kehatemperatuur', '9279-1^Hingamissagedus', '2708-6^Hapniku küllastus', '29463-7^Kehakaal', '8302-2^Pikkus'][i]}^LN||${[72, 135, 85, 36.8, 16, 97, 78.5, 176][i]}|${['/min', 'mm[Hg]', 'mm[Hg]', 'Cel', '/min', '%', 'kg', 'cm'][i]}^^UCUM|||||F|||${t}|||||${t}`,
  );
  return [
    `MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|CARE_GW|TARTUMAA|${t}||ADT^A03^ADT_A03|BENCH-${n}|P|2.5.1||||||UNICODE UTF-8`,
    `EVN|A03|${t}|||D99876^Arst^Andres^^^Dr^^^TAM|${t}`,
    `PID|1||${ik}^^^EE^NI~H-${n}^^^ELVA_HAIGLA^MR||Õunapuu^Tõnu^Jüri^^^^L||19${ik.slice(1, 3)}${ik.slice(3, 5)}${ik.slice(5, 7)}|${ik[0] === '3' ? 'M' : 'F'}|||Kesk tn ${n % 90}^^Elva^Tartumaa^61507^EE^H^^0171||^PRN^PH^^^^^^^^^+3725551234~^NET^Internet^tonu@example.ee|^WPN^PH^^^^^^^^^+3727300000|est^eesti^ISO639|M`,
    `PD1|||Elva Perearstikeskus^^10856624|D12345^Perearst^Piret^^^Dr^^^TAM`,
    `NK1|1|Õunapuu^Kati|DAU^Tütar^HL70063|Kesk tn 1^^Elva^^61507^EE|^PRN^PH^^^^^^^^^+3725559876||CGV^Hooldaja^HL70131`,
    `NK1|2|Õunapuu^Mart|SON^Poeg^HL70063|Rüütli 5^^Tartu^^51007^EE|^PRN^PH^^^^^^^^^+3725550000||EMC^Kontaktisik^HL70131`,
    `PV1|1|I|NEURO^101^1^ELVA_HAIGLA||||D99876^Arst^Andres^^^Dr^^^TAM|D12345^Perearst^Piret^^^Dr^^^TAM|||||||||||V${n}^^^ELVA_HAIGLA^VN|||||||||||||||||01||||||||20261101100000|${t}`,
    `PV2|||I63.9^Ajuinfarkt^I10||||||||10`,
    `DG1|1||I63.9^Ajuinfarkt, täpsustamata^I10||20261101|A`,
    `DG1|2||I10^Essentsiaalne hüpertensioon^I10||20261101|W`,
    `DG1|3||E11.9^Insuliinsõltumatu diabeet^I10||20261101|W`,
    `AL1|1|DA|PENICILLIN^Penitsilliin^L|MO|Lööve|20100101`,
    `AL1|2|FA|NUTS^Pähklid^L|SV|Anafülaksia|20050101`,
    ...obx,
    `ROL|1|AD|PP^Primary Care Provider^HL70443|D12345^Perearst^Piret^^^Dr^^^TAM|20200101`,
    `NTE|1||Patsient vajab koduhooldust; tütar on hooldaja.`,
    `ZCN|1|Y|Koduhoolduse vajadus`,
  ].join('\r');
}
